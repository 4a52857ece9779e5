"""Fitted step schedules (``diffplat tune-steps``), stored beside the weights they fit.

A checkpoint's schedules live in ``<name>.ckpt.steps.json`` beside it, an export's in its
``step_schedules.json``; each file carries the SHA-256 of the weights it was fitted to, so a
schedule fitted to other weights is never used silently.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from diffplat.fileio import atomic_write_text

WEIGHTS_FILE = "model.safetensors"  # an export's weights
STEPS_FILE = "step_schedules.json"  # inside an export folder
STEPS_SUFFIX = ".steps.json"        # beside a .ckpt file: last.ckpt -> last.ckpt.steps.json


def step_schedules_path(ckpt: str | Path) -> Path:
    """Where the fitted step schedules of a checkpoint or export folder live."""
    ckpt = Path(ckpt)
    return ckpt / STEPS_FILE if ckpt.is_dir() else ckpt.with_name(ckpt.name + STEPS_SUFFIX)


def weights_fingerprint(ckpt: str | Path) -> str:
    """sha256 of the checkpoint file (or of an export's model.safetensors), so that a
    schedule fitted to other weights is never used silently."""
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


def save_default_schedule(ckpt: str | Path, entry: dict[str, Any]) -> Path:
    """Store ``entry`` (sampler, steps, levels, options) as the model's own sampling: what
    ``SamplingRequest.resolve`` uses when the request names no sampler, no spacing and no
    other budget (a distilled student's K steps on the grid it was distilled on,
    ``diffplat distill``). Replaces the file: other weights' schedules do not apply."""
    path = step_schedules_path(ckpt)
    key = f"{entry['sampler']}/{entry['steps']}"
    data = {"fingerprint": weights_fingerprint(ckpt), "schedules": {key: entry},
            "default": key}
    atomic_write_text(path, json.dumps(data, indent=2))
    return path


def default_schedule(ckpt: str | Path | None) -> dict[str, Any] | None:
    """The schedule a checkpoint or export declares as its own sampling
    (``save_default_schedule``), or None; one fitted to other weights raises ValueError."""
    if ckpt is None or not step_schedules_path(ckpt).is_file():
        return None
    key = load_step_schedules(ckpt, check=False).get("default")
    if not key:  # fitted schedules only (tune-steps): nothing to hash
        return None
    return load_step_schedules(ckpt)["schedules"].get(key)


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


def export_step_schedules(ckpt: str | Path, out_dir: str | Path) -> Path | None:
    """Carry a checkpoint's fitted step schedules into its export folder (same EMA weights,
    so they apply unchanged; re-fingerprinted for model.safetensors)."""
    data = load_step_schedules(ckpt)
    if not data["schedules"]:
        return None
    out = Path(out_dir)
    path = out / STEPS_FILE
    carried = {"fingerprint": weights_fingerprint(out), "schedules": data["schedules"]}
    if data.get("default"):
        carried["default"] = data["default"]
    atomic_write_text(path, json.dumps(carried, indent=2))
    return path
