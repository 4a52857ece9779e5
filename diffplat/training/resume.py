"""What ``diffplat fit|validate|test`` decide before Lightning runs: which stored model
settings an explicit flag may change when a checkpoint is restored (``--ckpt_path``), the
backbone sizes that follow from the data, the model class a config names, Lightning's SLURM
checkpoint, and the run configuration as plain data for a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from diffplat.trust import trusted_prefixes

#: DiffusionModule arguments that only steer sampling and evaluation: explicit flags may
#: change them for a restored model in every subcommand.
EVAL_OPTIONS = frozenset({"sample_num", "sampler", "sample_steps", "sample_every_n_epochs",
                          "val_batch_size", "num_workers", "seed", "log_snr_buckets"})
#: ... and those that only steer optimisation, which ``fit`` may change when resuming.
FIT_OPTIONS = EVAL_OPTIONS | {"lr", "weight_decay", "betas", "warmup_steps", "decay_steps",
                              "min_lr_ratio", "clip", "clip_value", "ema_decay", "batch_size",
                              "on_nonfinite", "max_skipped_fraction", "compile"}


def _note(cmd: str, message: str) -> None:
    print(f"diffplat {cmd}: {message}", file=sys.stderr)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values, tuples as lists (stored configs hold lists)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(tree, tuple):
        tree = list(tree)
    return {prefix: tree}


def explicit_model_keys(argv: list[str]) -> list[str]:
    """The ``--model.X`` keys typed on the command line (not from config files)."""
    keys = []
    for tok in argv:
        if tok.startswith("--model."):
            keys.append(tok[len("--model."):].split("=", 1)[0])
    return keys


def _domain_class(domain_cfg: Any):
    import importlib

    module, _, name = str(domain_cfg["class_path"]).rpartition(".")
    return getattr(importlib.import_module(module), name)


def _allowed(key: str, subcommand: str, domain_cfg: Any) -> bool:
    top = key.split(".")[0]
    if top in (FIT_OPTIONS if subcommand == "fit" else EVAL_OPTIONS):
        return True
    if key.startswith("domain.init_args.") and domain_cfg is not None:
        cls = _domain_class(domain_cfg)
        return key.split(".")[2] in getattr(cls, "eval_options", ())
    return False


def derive_backbone_args(model: dict[str, Any], explicit: set[str] | None = None
                         ) -> dict[str, Any]:
    """The backbone arguments to set from ``Domain.backbone_sizes`` for a DiffusionModule
    configuration (``{"domain": {...}, "backbone": {...}, ...}``). A size the user gave
    (``explicit``: the backbone argument names set in the config files or on the command
    line; default: those present in ``model``) that disagrees with the data is a ValueError
    naming the key; the others are set."""
    import importlib
    import inspect

    from diffplat.plugins import instantiate_domain

    backbone = model.get("backbone") or {}
    if not isinstance(backbone, dict) or "class_path" not in backbone:
        return {}
    sizes = instantiate_domain(model["domain"]).backbone_sizes()
    module, _, name = str(backbone["class_path"]).rpartition(".")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    args = backbone.get("init_args") or {}
    explicit = set(args) if explicit is None else explicit
    out = {}
    for key, value in sizes.items():
        if key not in params or args.get(key) == value:
            continue
        current = args.get(key)
        if key in explicit and current is not None:
            raise ValueError(
                f"model.backbone.init_args.{key} is {current!r} but the data needs {value!r};"
                f" remove the key from the config (it is derived from the data) or set it "
                f"to {value!r}")
        out[key] = value
    return out


def _hpc_checkpoint(root: Path) -> Path | None:
    """The ``hpc_ckpt_<n>.ckpt`` with the largest n in ``root`` (Lightning's rule)."""
    import re

    found = [(int(m.group(1)), f) for f in (root.glob("hpc_ckpt_*.ckpt") if root.is_dir()
                                            else [])
             if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", f.name))]
    return max(found)[1] if found else None


def _plain(obj: Any) -> Any:
    """Keep only what torch.load(weights_only=True) accepts."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _other_model_class(args: list[str]) -> type | None:
    """pytorch_lightning.LightningModule when a config file names ``model.class_path``
    (a model that is not the DiffusionModule, such as the audio digit classifier); the
    class path itself is resolved by LightningCLI, restricted to trusted packages here."""
    from diffplat.configs import config_files, load_yaml

    for path in config_files(args):
        if not Path(path).is_file():
            continue
        model = load_yaml(Path(path)).get("model")
        if isinstance(model, dict) and "class_path" in model:
            cp = str(model["class_path"])
            if cp.endswith("DiffusionModule"):
                return None
            if not cp.startswith(trusted_prefixes()):
                raise ValueError(f"{path}: model.class_path {cp!r} is outside the trusted "
                                 f"packages {', '.join(trusted_prefixes())}")
            import pytorch_lightning as pl

            return pl.LightningModule
    return None
