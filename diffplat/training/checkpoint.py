"""Checkpoints and training: the LightningModule built from a stored configuration or read
from a checkpoint or export (``build_module``, ``load_module``).

Writing checkpoints atomically is ``diffplat.training.atomic``'s. Reading checkpoints and
export folders, exporting and fitted step schedules are the model store's
(``diffplat.store``, no Lightning in it), whose names are kept here for this module's
callers; inference reads with ``diffplat.store.load_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffplat.store import (  # noqa: F401 - the store's names, kept for this module's callers
    CONFIG_FILE,
    STEPS_FILE,
    WEIGHTS_FILE,
    NonFiniteCheckpointError,
    check_weights,
    export,
    export_step_schedules,
    fitted_schedule,
    load_export,
    load_model,
    load_step_schedules,
    module_config,
    nonfinite_tensors,
    read_checkpoint,
    save_step_schedule,
    step_schedules_path,
    weights_fingerprint,
)
from diffplat.store.export import DOMAIN_STATE_FILE, split_state  # noqa: F401
from diffplat.training.atomic import (  # noqa: F401
    AtomicCheckpointIO,
    remove_stale_temporaries,
)
from diffplat.trust import TRUSTED_PREFIXES, check_class_paths, trusted_prefixes

__all__ = ["TRUSTED_PREFIXES", "check_class_paths", "trusted_prefixes"]  # the trust rule


def build_module(config: dict[str, Any], trusted_prefixes: tuple[str, ...] | None = None,
                 source: str = "a model configuration"):
    """A DiffusionModule (Lightning) from its stored configuration, under the trust rule
    (``diffplat.store.config.parse_arguments``)."""
    from diffplat.store.config import parse_arguments
    from diffplat.training.module import DiffusionModule

    module = DiffusionModule(**parse_arguments(config, trusted_prefixes, source))
    module.hparams.update(module_config(config))  # the configuration, not the objects
    return module


def load_module(path: str | Path, map_location: Any = "cpu",
                trusted_prefixes: tuple[str, ...] | None = None):
    """A DiffusionModule (Lightning) from a checkpoint or an export folder, read as the
    store reads them (``diffplat.store.load_model``)."""
    return load_model(path, map_location, trusted_prefixes, build=build_module)
