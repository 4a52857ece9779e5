"""Reading a Lightning checkpoint without Lightning and without unpickling code.

A checkpoint is a ``torch.save``'d dict: it is read with ``torch.load(weights_only=True)``
(tensors and plain containers only), its stored configuration is built under the trust rule
(``diffplat.store.config``), and its weights are checked against that model before they are
loaded. What it holds beside the model (the optimizer, the training's clipping and skip
state) is left to training (``diffplat.training``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffplat.store.config import build_model

#: state-dict entries of a checkpoint that belong to training, not to the model: the
#: adaptive clipper's recent norms and the count of skipped batches (DiffusionModule)
TRAINING_STATE = ("grad_norms", "grad_norms_filled", "skipped_batches")


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


def load_domain_state(model, state: dict[str, Any], source: str) -> None:
    try:
        model.domain.load_sampling_state(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{source}: the domain's sampling state does not fit the "
                         f"{type(model.domain).__name__} it configures ({type(err).__name__}: "
                         f"{reason})") from None


def load_checkpoint(path: str | Path, map_location: Any = "cpu",
                    trusted_prefixes: tuple[str, ...] | None = None, build=build_model):
    """A DiffusionModel (eval mode) from a Lightning checkpoint; ``build(config,
    trusted_prefixes, source)`` makes the model (training passes its LightningModule's)."""
    path = Path(path)
    ckpt = read_checkpoint(path, map_location)
    hparams = ckpt.get("hyper_parameters")
    if not hparams or "domain" not in hparams:
        raise ValueError(f"checkpoint {path} carries no diffplat model configuration")
    model = build(hparams, trusted_prefixes, source=f"checkpoint {path}")
    stored = ckpt["state_dict"]
    # training's own entries (first, as DiffusionModule holds them), where the file has them
    own = model.state_dict()
    expected = own
    if isinstance(stored, dict) and not any(k in own for k in TRAINING_STATE):
        # training's own entries (first, as DiffusionModule holds them), where the file has
        # them: a DiffusionModel does not read them
        expected = {**{k: stored[k] for k in TRAINING_STATE if k in stored}, **own}
    check_weights(expected, stored, f"checkpoint {path}")
    model.load_state_dict({k: v for k, v in stored.items() if k in own})
    extra = ckpt.get("diffplat") or {}
    model.run_config = extra.get("run_config")
    model.train_record = dict(extra.get("train_record") or {})
    if extra.get("domain_state"):
        load_domain_state(model, extra["domain_state"], f"checkpoint {path}")
    return model.eval()
