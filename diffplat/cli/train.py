"""``diffplat fit|validate|test``: LightningCLI over DiffusionModule.

Defaults added here: wandb logging in offline mode (written under the run folder), a
ModelCheckpoint section (``--checkpoint.*``) that keeps ``last.ckpt`` in
``<default_root_dir>/checkpoints``, atomic checkpoint writes, and the full run configuration
stored in every checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import WandbLogger

from diffplat.training.checkpoint import AtomicCheckpointIO
from diffplat.training.module import DiffusionModule

WANDB_DEFAULT = {
    "class_path": "pytorch_lightning.loggers.WandbLogger",
    "init_args": {"project": "diffplat", "offline": True},
}


class DiffplatCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True,
                 model_class: type | None = None):
        # model_class: a LightningModule other than DiffusionModule (e.g. the audio digit
        # classifier), chosen by the config's ``model.class_path`` (see run()); such configs
        # give the model as class_path + init_args
        super().__init__(
            model_class or DiffusionModule,
            subclass_mode_model=model_class is not None,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 0,
            "trainer.logger": WANDB_DEFAULT,
            "trainer.default_root_dir": "runs/default",
        })

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        root = Path(trainer.default_root_dir)
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = str(root / "checkpoints")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._wandb_init.get("dir") in (None, "."):
                root.mkdir(parents=True, exist_ok=True)
                logger._wandb_init["dir"] = str(root)
                logger._save_dir = str(root)
                if os.environ.get("WANDB_MODE") == "online":
                    logger._wandb_init["mode"] = "online"
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        self.model.run_config = self.config_dump
        return trainer

    def _dump_config(self) -> None:
        super()._dump_config()
        self.config_dump = _plain(self.config_dump)


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
    import yaml

    from diffplat.training.checkpoint import TRUSTED_PREFIXES

    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--config")]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        if not Path(path).is_file():
            continue
        model = (yaml.safe_load(Path(path).read_text()) or {}).get("model")
        if isinstance(model, dict) and "class_path" in model:
            cp = str(model["class_path"])
            if cp.endswith("DiffusionModule"):
                return None
            if not cp.startswith(TRUSTED_PREFIXES):
                raise ValueError(f"{path}: model.class_path {cp!r} is outside the trusted "
                                 f"packages {', '.join(TRUSTED_PREFIXES)}")
            import pytorch_lightning as pl

            return pl.LightningModule
    return None


def run(args: list[str]) -> None:
    """Run LightningCLI as if ``diffplat <args>`` had been typed. sys.argv is set to match,
    because Lightning's DDP launcher starts the other ranks by re-running sys.argv."""
    import sys

    saved = sys.argv
    sys.argv = [saved[0], *args]
    try:
        DiffplatCLI(args=None, model_class=_other_model_class(args))
    finally:
        sys.argv = saved
