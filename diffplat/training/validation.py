"""Sampling and scoring at validation and test: a Lightning Callback that DiffusionModule
brings itself (``configure_callbacks``), so every trainer gets it.

At the end of a validation (every ``sample_every_n_epochs`` epochs) or test epoch, global
rank 0 draws ``sample_num`` samples with the EMA weights (seeded with the model's ``seed``),
logs the domain's metrics as ``val/<name>`` or ``test/<name>``, and saves a preview PNG
beside the logs (wandb also gets it, and the domain's ``media``). Off with
``sample_num = 0``, during the sanity check, and for a refiner (trained on t < 1 only, it
has no start here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class SampleScoring(pl.Callback):
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                                ) -> None:
        score_samples(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        score_samples(trainer, pl_module, "test")


def score_samples(trainer: pl.Trainer, module: pl.LightningModule, split: str) -> None:
    hp = module.hparams
    if hp.sample_num <= 0 or trainer.sanity_checking:
        return
    if module.ema_denoiser.max_t < 1.0:  # a refiner has nothing to start from here
        return
    if split == "val" and module.current_epoch % max(1, hp.sample_every_n_epochs) != 0:
        return
    if module.global_rank != 0:  # one rank samples and scores; the others wait
        return
    samples, _ = module.generate(hp.sample_num, seed=hp.seed)
    for k, v in module.domain.metrics(samples, split).items():
        if isinstance(v, str):  # a label (molecules: the stability protocol), not logged
            continue
        module.log(f"{split}/{k}", float(v), rank_zero_only=True)
    log_preview(trainer, module, samples, split)


def log_preview(trainer: pl.Trainer, module: pl.LightningModule, samples: Any,
                split: str) -> None:
    """Save a preview PNG beside the logs; wandb also receives it as an image, and the
    domain's ``media(samples)`` ({name: wandb objects})."""
    logger = module.logger
    if logger is None:
        return
    root = Path(getattr(logger, "log_dir", None) or trainer.default_root_dir)
    path = module.domain.preview(samples, root / "previews" /
                                 f"{split}_step{module.global_step:07d}.png")
    if hasattr(logger, "log_image"):
        logger.log_image(key=f"{split}/samples", images=[str(path)], step=module.global_step)
    if type(logger).__name__ == "WandbLogger":
        media = module.domain.media(samples)  # e.g. wandb.Audio clips, wandb.Object3D
        if media:
            logger.log_metrics({f"{split}/{k}": v for k, v in media.items()},
                               step=module.global_step)
