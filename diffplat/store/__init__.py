"""The model store, without Lightning: read a checkpoint or an export folder under the one
trust rule (``diffplat.trust``), build the ``DiffusionModel``, export, model cards, fitted
step schedules.

* ``config``: a stored configuration -> a DiffusionModel (``build_model``);
* ``checkpoint``: Lightning checkpoints read as plain data (``load_checkpoint``);
* ``export``: export folders, written and read (``export``, ``load_export``);
* ``schedules``: the step schedules ``diffplat tune-steps`` fits;
* ``cards``: model cards.

Writing checkpoints while training (atomic, never NaN) is training's
(``diffplat.training.checkpoint``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffplat.store.cards import CARD_JSON, CARD_MD, card_markdown, model_card
from diffplat.store.checkpoint import TRAINING_STATE as TRAINING_STATE_KEYS
from diffplat.store.checkpoint import (
    NonFiniteCheckpointError,
    check_weights,
    load_checkpoint,
    nonfinite_tensors,
    read_checkpoint,
)
from diffplat.store.config import build_model, module_config
from diffplat.store.export import CONFIG_FILE, export, load_export
from diffplat.store.schedules import (
    STEPS_FILE,
    WEIGHTS_FILE,
    export_step_schedules,
    fitted_schedule,
    load_step_schedules,
    save_step_schedule,
    step_schedules_path,
    weights_fingerprint,
)


def load_model(path: str | Path, map_location: Any = "cpu",
               trusted_prefixes: tuple[str, ...] | None = None, build=build_model):
    """A DiffusionModel (eval mode) from a Lightning checkpoint or an export folder;
    ``build(config, trusted_prefixes, source)`` makes the model (default ``build_model``;
    ``diffplat.training.checkpoint.load_module`` passes its LightningModule's)."""
    path = Path(path)
    if path.is_dir():
        return load_export(path, map_location, trusted_prefixes, build)
    return load_checkpoint(path, map_location, trusted_prefixes, build)


__all__ = ["CARD_JSON", "CARD_MD", "CONFIG_FILE", "STEPS_FILE", "TRAINING_STATE_KEYS",
           "WEIGHTS_FILE", "NonFiniteCheckpointError", "build_model", "card_markdown",
           "check_weights", "export", "export_step_schedules", "fitted_schedule",
           "load_checkpoint", "load_export", "load_model", "load_step_schedules", "model_card",
           "module_config", "nonfinite_tensors", "read_checkpoint", "save_step_schedule",
           "step_schedules_path", "weights_fingerprint"]
