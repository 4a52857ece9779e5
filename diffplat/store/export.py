"""Export folders: the EMA weights as safetensors plus the configuration as JSON.

``export`` writes ``model.safetensors`` (the EMA weights), ``config.json`` (the model's
stored configuration, its run configuration and training record, the domain's JSON-able
sampling state), ``domain_state.safetensors`` (the domain's tensors) and ``assets/`` (the
files the domain's metrics read); ``load_export`` builds the DiffusionModel back under the
trust rule. Nothing in a folder is unpickled.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from diffplat.fileio import file_mode
from diffplat.store.checkpoint import (
    NonFiniteCheckpointError,
    check_weights,
    load_domain_state,
    nonfinite_tensors,
)
from diffplat.store.config import build_model, module_config
from diffplat.store.schedules import WEIGHTS_FILE

CONFIG_FILE = "config.json"
DOMAIN_STATE_FILE = "domain_state.safetensors"
ASSETS_DIR = "assets"  # files the domain's metrics read (Domain.assets), inside an export


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise ValueError(f"refusing to write through the symbolic link {path} (to "
                         f"{os.readlink(path)}); remove it or export to a new folder")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, with a link refused and a full disk said as ENOSPC (the
    partial file removed)."""
    from safetensors.torch import save_file

    _refuse_link(path)
    try:
        save_file(tensors, path)
    except Exception as err:
        path.unlink(missing_ok=True)
        text = str(err)
        if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or \
                "No space left" in text or "os error 28" in text:
            raise OSError(errno.ENOSPC, "No space left on device while exporting",
                          str(path)) from None
        raise


def _umask_modes(paths: list[Path]) -> None:
    """Files as open() would create them (0o666 & ~umask); safetensors makes them 0600."""
    mode = file_mode()
    for f in paths:
        if f.is_file() and not f.is_symlink():
            os.chmod(f, mode)


def split_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A domain's sampling state -> (tensors for safetensors, JSON-able rest)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()
               if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    json.dumps(plain)  # fails here, not at load time, when a domain returns something else
    return tensors, plain


def export(model, out_dir: str | Path) -> list[Path]:
    """Write the EMA weights (safetensors) and the model configuration (JSON)."""
    out = Path(out_dir)
    _refuse_link(out)
    out.mkdir(parents=True, exist_ok=True)
    config = module_config(dict(model.hparams))
    if "domain" not in config or not isinstance(config["domain"], dict):
        raise ValueError("this module was not built from a configuration; build it with "
                         "diffplat.store.build_model to export it")
    weights = {k: v.detach().contiguous().cpu() for k, v in model.ema.shadow.state_dict().items()}
    bad = nonfinite_tensors(weights)
    if bad:
        raise NonFiniteCheckpointError(f"refusing to export: {len(bad)} weights hold NaN or "
                                       f"Inf (e.g. {', '.join(bad[:3])})")
    _save_tensors(weights, out / WEIGHTS_FILE)
    written = [out / WEIGHTS_FILE, out / CONFIG_FILE]
    tensors, plain = split_state(model.domain.sampling_state())
    if tensors:
        _save_tensors(tensors, out / DOMAIN_STATE_FILE)
        written.append(out / DOMAIN_STATE_FILE)
    assets = {}
    for option, src in sorted(model.domain.assets().items()):
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"refusing to export: the domain's {option} {src} does "
                                    "not exist (the folder would not score as its card)")
        rel = f"{ASSETS_DIR}/{option}{''.join(src.suffixes)}"
        _refuse_link(out / ASSETS_DIR)
        _refuse_link(out / rel)
        (out / ASSETS_DIR).mkdir(exist_ok=True)
        if src.resolve() != (out / rel).resolve():
            shutil.copyfile(src, out / rel)
        assets[option] = rel
        written.append(out / rel)
    meta = {"model": config, "run_config": model.run_config, "domain_state": plain,
            # the shapes, so that a replaced or incomplete domain_state file is named
            "domain_state_shapes": {k: list(v.shape) for k, v in tensors.items()},
            "train_record": getattr(model, "train_record", {}), "assets": assets,
            "format": "diffplat-export-2"}
    _refuse_link(out / CONFIG_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    _umask_modes(written)
    return written


def _read_tensors(path: Path, map_location: Any) -> dict[str, torch.Tensor]:
    """A safetensors file, or ValueError naming it (truncated, corrupt, not safetensors)."""
    from safetensors.torch import load_file

    try:
        return load_file(path, device=str(map_location))
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read {path} ({path.stat().st_size} bytes): {reason}; it is "
                         "truncated, corrupt or not a safetensors file") from None


def load_export(out_dir: Path, map_location: Any = "cpu",
                trusted_prefixes: tuple[str, ...] | None = None, build=build_model):
    """A DiffusionModel (eval mode) from an export folder (``build``: as
    ``load_checkpoint``'s)."""
    cfg_file, w_file = out_dir / CONFIG_FILE, out_dir / WEIGHTS_FILE
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"export folder {out_dir} lacks {f.name}")
    try:
        meta = json.loads(cfg_file.read_text())
        model_cfg = meta["model"]
    except (ValueError, KeyError) as err:
        raise ValueError(f"{cfg_file}: not a diffplat export configuration ({err})") from None
    model = build(model_cfg, trusted_prefixes, source=str(cfg_file))
    weights = _read_tensors(w_file, map_location)
    check_weights(model.backbone.state_dict(), weights, str(w_file))
    model.backbone.load_state_dict(weights)
    model.ema.shadow.load_state_dict(weights)
    model.run_config = meta.get("run_config")
    model.train_record = dict(meta.get("train_record") or {})
    state = dict(meta.get("domain_state") or {})
    d_file, shapes = out_dir / DOMAIN_STATE_FILE, meta.get("domain_state_shapes")
    if d_file.is_file() or shapes:
        if not d_file.is_file():
            raise FileNotFoundError(f"export folder {out_dir} lacks {d_file.name}")
        tensors = _read_tensors(d_file, "cpu")
        if isinstance(shapes, dict):  # recorded by export (older folders have no record)
            try:  # shapes only (nothing allocated)
                recorded = {k: SimpleNamespace(shape=torch.Size(v)) for k, v in shapes.items()}
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"{cfg_file}: domain_state_shapes is not a record of "
                                 "shapes") from None
            check_weights(recorded, tensors, str(d_file))
        state.update(tensors)
    if state:
        load_domain_state(model, state, str(d_file if d_file.is_file() else cfg_file))
    options = inspect.signature(type(model.domain)).parameters
    for option, rel in dict(meta.get("assets") or {}).items():  # the copies scored on the card
        if option not in options or not isinstance(rel, str):  # only a constructor option
            raise ValueError(f"{cfg_file}: asset {option!r} is not an option of "
                             f"{type(model.domain).__name__}")
        path = (out_dir / rel).resolve()
        if not path.is_relative_to(out_dir.resolve()) or not path.is_file():
            raise FileNotFoundError(f"export folder {out_dir} lacks its asset {rel}")
        setattr(model.domain, option, str(path))
    return model.eval()
