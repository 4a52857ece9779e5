"""Safe checkpoints: atomic writes, loading without unpickling code, safetensors export.

* Lightning checkpoints written through ``AtomicCheckpointIO`` go to a temporary file in the
  same folder, are fsync'ed and then renamed over the target, so a kill at any moment leaves
  either the old or the new file, never a truncated one.
* ``load_module`` reads a checkpoint with ``torch.load(weights_only=True)``: only tensors and
  plain containers are accepted. The model is rebuilt from the configuration stored in it
  (class paths are resolved by import, restricted to the ``diffplat`` and ``domains``
  packages unless ``trusted_prefixes`` says otherwise).
* ``export`` writes the EMA weights as safetensors plus the configuration as JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
TRUSTED_PREFIXES = ("diffplat.", "domains.", "torch.nn.")


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that never leaves a partially written file behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _check_class_paths(cfg: Any, trusted: tuple[str, ...]) -> None:
    if isinstance(cfg, dict):
        cp = cfg.get("class_path")
        if isinstance(cp, str) and not cp.startswith(trusted):
            raise ValueError(f"refusing to import {cp!r} from a checkpoint configuration; "
                             f"trusted prefixes: {', '.join(trusted)}")
        for v in cfg.values():
            _check_class_paths(v, trusted)
    elif isinstance(cfg, list):
        for v in cfg:
            _check_class_paths(v, trusted)


def module_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """The DiffusionModule constructor configuration from stored hyperparameters."""
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def build_module(config: dict[str, Any], trusted_prefixes: tuple[str, ...] = TRUSTED_PREFIXES):
    """Instantiate a DiffusionModule from its configuration (class_path/init_args dicts)."""
    from jsonargparse import ArgumentParser
    from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters_context

    from diffplat.training.module import DiffusionModule

    config = module_config(config)
    _check_class_paths(config, trusted_prefixes)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DiffusionModule, "model", fail_untyped=False)
    parsed = parser.parse_object({"model": config})
    with _given_hyperparameters_context(hparams=config,
                                        instantiator="diffplat.training.checkpoint"):
        return parser.instantiate_classes(parsed).model


def load_module(path: str | Path, map_location: Any = "cpu",
                trusted_prefixes: tuple[str, ...] = TRUSTED_PREFIXES):
    """Load a DiffusionModule from a Lightning checkpoint or an export folder."""
    path = Path(path)
    if path.is_dir():
        return load_export(path, map_location, trusted_prefixes)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, or objects that need unpickling
        raise ValueError(f"cannot read checkpoint {path}: {err}") from None
    hparams = ckpt.get("hyper_parameters")
    if not hparams or "domain" not in hparams:
        raise ValueError(f"checkpoint {path} carries no diffplat model configuration")
    module = build_module(hparams, trusted_prefixes)
    module.load_state_dict(ckpt["state_dict"])
    module.run_config = (ckpt.get("diffplat") or {}).get("run_config")
    return module.eval()


def export(module, out_dir: str | Path) -> list[Path]:
    """Write the EMA weights (safetensors) and the model configuration (JSON)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = module_config(dict(module.hparams))
    if "domain" not in config or not isinstance(config["domain"], dict):
        raise ValueError("this module was not built from a configuration; build it with "
                         "diffplat.training.checkpoint.build_module to export it")
    weights = {k: v.detach().contiguous().cpu() for k, v in module.ema.shadow.state_dict().items()}
    save_file(weights, out / WEIGHTS_FILE)
    meta = {"model": config, "run_config": module.run_config, "format": "diffplat-export-1"}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return [out / WEIGHTS_FILE, out / CONFIG_FILE]


def export_step_schedules(ckpt: str | Path, out_dir: str | Path) -> Path | None:
    """Carry a checkpoint's fitted step schedules into its export folder (same EMA weights,
    so they apply unchanged; re-fingerprinted for model.safetensors)."""
    data = load_step_schedules(ckpt)
    if not data["schedules"]:
        return None
    out = Path(out_dir)
    path = out / STEPS_FILE
    _atomic_write_text(path, json.dumps({"fingerprint": weights_fingerprint(out),
                                         "schedules": data["schedules"]}, indent=2))
    return path


def load_export(out_dir: Path, map_location: Any = "cpu",
                trusted_prefixes: tuple[str, ...] = TRUSTED_PREFIXES):
    from safetensors.torch import load_file

    cfg_file, w_file = out_dir / CONFIG_FILE, out_dir / WEIGHTS_FILE
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"export folder {out_dir} lacks {f.name}")
    meta = json.loads(cfg_file.read_text())
    module = build_module(meta["model"], trusted_prefixes)
    weights = load_file(w_file, device=str(map_location))
    module.backbone.load_state_dict(weights)
    module.ema.shadow.load_state_dict(weights)
    module.run_config = meta.get("run_config")
    return module.eval()


# -- fitted step schedules (diffplat tune-steps) ----------------------------------------------
STEPS_FILE = "step_schedules.json"  # inside an export folder
STEPS_SUFFIX = ".steps.json"        # beside a .ckpt file: last.ckpt -> last.ckpt.steps.json


def step_schedules_path(ckpt: str | Path) -> Path:
    """Where the fitted step schedules of a checkpoint or export folder live."""
    ckpt = Path(ckpt)
    return ckpt / STEPS_FILE if ckpt.is_dir() else ckpt.with_name(ckpt.name + STEPS_SUFFIX)


def weights_fingerprint(ckpt: str | Path) -> str:
    """sha256 of the checkpoint file (or of an export's model.safetensors), so that a
    schedule fitted to other weights is never used silently."""
    import hashlib

    ckpt = Path(ckpt)
    target = ckpt / WEIGHTS_FILE if ckpt.is_dir() else ckpt
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_step_schedules(ckpt: str | Path, check: bool = True) -> dict[str, Any]:
    """{"fingerprint": ..., "schedules": {"<sampler>/<steps>": entry}} (empty when none).
    With ``check``, schedules fitted to other weights raise ValueError."""
    path = step_schedules_path(ckpt)
    if not path.is_file():
        return {"fingerprint": None, "schedules": {}}
    data = json.loads(path.read_text())
    if check and data.get("fingerprint") != weights_fingerprint(ckpt):
        raise ValueError(f"the fitted step schedules in {path} belong to other weights than "
                         f"{ckpt} (it changed after `diffplat tune-steps`); run tune-steps "
                         "again")
    return data


def save_step_schedule(ckpt: str | Path, entry: dict[str, Any]) -> Path:
    """Add (or replace) one fitted schedule, keyed by sampler and steps; atomic write."""
    path = step_schedules_path(ckpt)
    fingerprint = weights_fingerprint(ckpt)
    data = load_step_schedules(ckpt, check=False)
    if data.get("fingerprint") != fingerprint:
        data = {"fingerprint": fingerprint, "schedules": {}}  # weights changed: start over
    data["schedules"][f"{entry['sampler']}/{entry['steps']}"] = entry
    _atomic_write_text(path, json.dumps(data, indent=2))
    return path


def fitted_schedule(ckpt: str | Path, sampler: str, steps: int) -> dict[str, Any]:
    """The schedule ``tune-steps`` fitted for ``sampler`` with ``steps`` steps; a missing one
    raises FileNotFoundError naming the command that makes it."""
    entry = load_step_schedules(ckpt)["schedules"].get(f"{sampler}/{steps}")
    if entry is None:
        raise FileNotFoundError(
            f"no fitted step schedule for {sampler} with {steps} steps in "
            f"{step_schedules_path(ckpt)}; make one with `diffplat tune-steps --ckpt {ckpt} "
            f"--sampler {sampler} --nfe {entry_nfe(sampler, steps)}`")
    return entry


def entry_nfe(sampler: str, steps: int) -> int:
    from diffplat import samplers

    return samplers.nfe_for_steps(sampler, steps)
