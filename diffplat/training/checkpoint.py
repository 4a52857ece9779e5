"""Safe checkpoints: atomic writes, loading without unpickling code, safetensors export.

* Lightning checkpoints written through ``AtomicCheckpointIO`` go to a temporary file in the
  same folder, are fsync'ed and then renamed over the target, so a kill at any moment leaves
  either the old or the new file, never a truncated one.
* ``load_module`` reads a checkpoint with ``torch.load(weights_only=True)``: only tensors and
  plain containers are accepted. The model is rebuilt from the configuration stored in it
  under the trust rule of ``diffplat.trust``: every value that could name a class must lie
  in a trusted package, checked before anything is imported.
* ``export`` writes the EMA weights as safetensors plus the configuration as JSON.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from diffplat.fileio import atomic_write_text, file_mode
from diffplat.trust import TRUSTED_PREFIXES, check_class_paths, enforced, trusted_prefixes

__all__ = ["TRUSTED_PREFIXES", "check_class_paths", "trusted_prefixes"]  # the trust rule

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
DOMAIN_STATE_FILE = "domain_state.safetensors"
ASSETS_DIR = "assets"  # files the domain's metrics read (Domain.assets), inside an export
_TMP_SUFFIX = ".tmp"


class NonFiniteCheckpointError(FloatingPointError):
    """A checkpoint about to be written holds NaN or Inf; nothing was written."""


def nonfinite_tensors(tree: Any, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a nested dict/list that hold NaN or Inf."""
    bad: list[str] = []
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and tree.numel() and not bool(torch.isfinite(tree).all()):
            bad.append(prefix or "tensor")
    elif isinstance(tree, dict):
        for k, v in tree.items():
            bad += nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            bad += nonfinite_tensors(v, f"{prefix}[{i}]")
    return bad


def _disk_full(folder: Path, margin: int = 64 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def _tmp_prefix(name: str) -> str:
    """Temporaries carry their writer: ``.last.ckpt.pid<PID>~<host>~<random>.tmp``."""
    import re
    import socket

    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "localhost")
    return f".{name}.pid{os.getpid()}~{host}~"


def remove_stale_temporaries(folder: Path, max_age: float = 3600.0) -> list[Path]:
    """Delete the temporaries of checkpoint writes that a kill interrupted, never those of
    a live writer: a temporary of this host is removed when its pid is no longer running,
    one of another host (a shared file system) when it is older than ``max_age`` seconds
    (no write takes that long), one without an owner (older versions) always."""
    import re
    import socket
    import time

    from diffplat.training.runlock import pid_alive

    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "localhost")
    removed = []
    if Path(folder).is_dir():
        for f in Path(folder).glob(f".*.ckpt.*{_TMP_SUFFIX}"):
            owner = re.search(r"\.pid(\d+)~([^~]*)~[^~]*\.tmp$", f.name)
            if owner and owner.group(2) == host:
                pid = int(owner.group(1))
                if pid == os.getpid() or pid_alive(pid):
                    continue
            elif owner:
                try:
                    if time.time() - f.stat().st_mtime < max_age:
                        continue
                except FileNotFoundError:
                    continue
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that never leaves a partially written file behind and never writes
    NaN or Inf weights (NonFiniteCheckpointError instead, the previous file kept). Files get
    the permissions of the umask, as ``open`` would give them (0644 under umask 022)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        bad = nonfinite_tensors({"state_dict": checkpoint.get("state_dict", {}),
                                 "optimizer_states": checkpoint.get("optimizer_states", [])})
        if bad:
            raise NonFiniteCheckpointError(
                f"refusing to write {path}: {len(bad)} tensors hold NaN or Inf (e.g. "
                f"{', '.join(bad[:3])}); the previous checkpoint is kept")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=_TMP_SUFFIX,
                                   dir=path.parent)
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes 0600; a checkpoint is a file
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
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(err, (RuntimeError, OSError)) and _disk_full(path.parent):
                # torch.save on a full disk says "enforce fail ... unexpected pos"
                raise OSError(errno.ENOSPC, "No space left on device while writing the "
                              "checkpoint (any previous one is kept)", str(path)) from None
            raise


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint as plain data, read without unpickling code; errors in one
    line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a .ckpt file (export folders load with "
                         "`diffplat sample --ckpt DIR`)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if isinstance(map_location, str):
        try:
            torch.device(map_location)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"{map_location!r} is not a device (reading {path}): "
                             f"{str(err).strip().splitlines()[0]}") from None
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, corrupt, or objects that need unpickling
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read checkpoint {path} ({path.stat().st_size} bytes): "
                         f"{reason}; it is truncated, corrupt or not a checkpoint") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def module_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """The DiffusionModule constructor configuration from stored hyperparameters."""
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def build_module(config: dict[str, Any], trusted_prefixes: tuple[str, ...] | None = None,
                 source: str = "a model configuration"):
    """Instantiate a DiffusionModule from its configuration (class_path/init_args dicts)
    under the trust rule (diffplat.trust): ``source`` names the file in its refusal."""
    from jsonargparse import ArgumentParser

    from diffplat.training.module import DiffusionModule

    config = module_config(config)
    check_class_paths(config, trusted_prefixes, source)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DiffusionModule, "model", fail_untyped=False)
    with enforced(trusted_prefixes, source):  # the trust rule again, at the import itself
        parsed = parser.parse_object({"model": config})
        module = parser.instantiate_classes(parsed).model
    module.hparams.update(config)  # the configuration, not the objects built from it
    return module


def load_module(path: str | Path, map_location: Any = "cpu",
                trusted_prefixes: tuple[str, ...] | None = None):
    """Load a DiffusionModule from a Lightning checkpoint or an export folder."""
    path = Path(path)
    if path.is_dir():
        return load_export(path, map_location, trusted_prefixes)
    ckpt = read_checkpoint(path, map_location)
    hparams = ckpt.get("hyper_parameters")
    if not hparams or "domain" not in hparams:
        raise ValueError(f"checkpoint {path} carries no diffplat model configuration")
    module = build_module(hparams, trusted_prefixes, source=f"checkpoint {path}")
    check_weights(module.state_dict(), ckpt["state_dict"], f"checkpoint {path}")
    module.load_state_dict(ckpt["state_dict"])
    extra = ckpt.get("diffplat") or {}
    module.run_config = extra.get("run_config")
    module.train_record = dict(extra.get("train_record") or {})
    if extra.get("domain_state"):
        _load_domain_state(module, extra["domain_state"], f"checkpoint {path}")
    return module.eval()


def check_weights(expected: dict[str, Any], stored: Any, source: str) -> None:
    """ValueError naming ``source`` and the first tensor whose shape differs between the
    weights a file stores and the model its configuration builds (or that one of the two
    lacks): the sizes it records disagree with its weights, or the file is incomplete."""
    if not isinstance(stored, dict):
        raise ValueError(f"{source}: its weights are not a name -> tensor mapping")
    for name, want in expected.items():
        if not hasattr(want, "shape"):  # a module's extra state: not a weight
            continue
        have = stored.get(name)
        if have is None:
            raise ValueError(f"{source} is incomplete: it lacks the weight {name} "
                             f"{tuple(want.shape)} of the model its configuration describes "
                             f"({sum(k not in stored for k in expected)} of {len(expected)} "
                             "missing)")
        if not hasattr(have, "shape"):
            raise ValueError(f"{source}: {name} is not a tensor")
        if tuple(have.shape) != tuple(want.shape):
            raise ValueError(f"{source}: its weights disagree with the sizes it stores: "
                             f"{name} is {tuple(have.shape)} in the file but "
                             f"{tuple(want.shape)} in the model its configuration describes")
    extra = [k for k in stored if k not in expected]
    if extra:
        raise ValueError(f"{source}: {len(extra)} weights (e.g. {extra[0]}) belong to no "
                         "part of the model its configuration describes")


def _load_domain_state(module, state: dict[str, Any], source: str) -> None:
    try:
        module.domain.load_sampling_state(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{source}: the domain's sampling state does not fit the "
                         f"{type(module.domain).__name__} it configures ({type(err).__name__}: "
                         f"{reason})") from None


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


def export(module, out_dir: str | Path) -> list[Path]:
    """Write the EMA weights (safetensors) and the model configuration (JSON)."""
    out = Path(out_dir)
    _refuse_link(out)
    out.mkdir(parents=True, exist_ok=True)
    config = module_config(dict(module.hparams))
    if "domain" not in config or not isinstance(config["domain"], dict):
        raise ValueError("this module was not built from a configuration; build it with "
                         "diffplat.training.checkpoint.build_module to export it")
    weights = {k: v.detach().contiguous().cpu() for k, v in module.ema.shadow.state_dict().items()}
    bad = nonfinite_tensors(weights)
    if bad:
        raise NonFiniteCheckpointError(f"refusing to export: {len(bad)} weights hold NaN or "
                                       f"Inf (e.g. {', '.join(bad[:3])})")
    _save_tensors(weights, out / WEIGHTS_FILE)
    written = [out / WEIGHTS_FILE, out / CONFIG_FILE]
    tensors, plain = split_state(module.domain.sampling_state())
    if tensors:
        _save_tensors(tensors, out / DOMAIN_STATE_FILE)
        written.append(out / DOMAIN_STATE_FILE)
    assets = {}
    for option, src in sorted(module.domain.assets().items()):
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
    meta = {"model": config, "run_config": module.run_config, "domain_state": plain,
            # the shapes, so that a replaced or incomplete domain_state file is named
            "domain_state_shapes": {k: list(v.shape) for k, v in tensors.items()},
            "train_record": getattr(module, "train_record", {}), "assets": assets,
            "format": "diffplat-export-2"}
    _refuse_link(out / CONFIG_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    _umask_modes(written)
    return written


def split_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A domain's sampling state -> (tensors for safetensors, JSON-able rest)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()
               if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    json.dumps(plain)  # fails here, not at load time, when a domain returns something else
    return tensors, plain


def export_step_schedules(ckpt: str | Path, out_dir: str | Path) -> Path | None:
    """Carry a checkpoint's fitted step schedules into its export folder (same EMA weights,
    so they apply unchanged; re-fingerprinted for model.safetensors)."""
    data = load_step_schedules(ckpt)
    if not data["schedules"]:
        return None
    out = Path(out_dir)
    path = out / STEPS_FILE
    atomic_write_text(path, json.dumps({"fingerprint": weights_fingerprint(out),
                                         "schedules": data["schedules"]}, indent=2))
    return path


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
                trusted_prefixes: tuple[str, ...] | None = None):
    cfg_file, w_file = out_dir / CONFIG_FILE, out_dir / WEIGHTS_FILE
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"export folder {out_dir} lacks {f.name}")
    try:
        meta = json.loads(cfg_file.read_text())
        model_cfg = meta["model"]
    except (ValueError, KeyError) as err:
        raise ValueError(f"{cfg_file}: not a diffplat export configuration ({err})") from None
    module = build_module(model_cfg, trusted_prefixes, source=str(cfg_file))
    weights = _read_tensors(w_file, map_location)
    check_weights(module.backbone.state_dict(), weights, str(w_file))
    module.backbone.load_state_dict(weights)
    module.ema.shadow.load_state_dict(weights)
    module.run_config = meta.get("run_config")
    module.train_record = dict(meta.get("train_record") or {})
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
        _load_domain_state(module, state, str(d_file if d_file.is_file() else cfg_file))
    options = inspect.signature(type(module.domain)).parameters
    for option, rel in dict(meta.get("assets") or {}).items():  # the copies scored on the card
        if option not in options or not isinstance(rel, str):  # only a constructor option
            raise ValueError(f"{cfg_file}: asset {option!r} is not an option of "
                             f"{type(module.domain).__name__}")
        path = (out_dir / rel).resolve()
        if not path.is_relative_to(out_dir.resolve()) or not path.is_file():
            raise FileNotFoundError(f"export folder {out_dir} lacks its asset {rel}")
        setattr(module.domain, option, str(path))
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
    atomic_write_text(path, json.dumps(data, indent=2))
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
