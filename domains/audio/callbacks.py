"""Audio in wandb: the clips the last validation sampled, as playable wandb.Audio."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger


class LogAudio(pl.Callback):
    """After each validation, log the first ``num`` clips that the audio domain sampled and
    scored (``AudioDomain.last_samples``) to every wandb logger, captioned with the label.

    Args:
        num: clips to log.
    """

    def __init__(self, num: int = 8):
        self.num = num

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = getattr(pl_module.domain, "last_samples", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if samples is None or not loggers or trainer.sanity_checking:
            return
        import wandb

        classes = pl_module.domain.classes or []
        clips = []
        for i, clip in enumerate(samples.audio[:self.num].detach().cpu().float()):
            caption = f"#{i}"
            if samples.labels is not None:
                lab = int(samples.labels[i])
                caption += f" {classes[lab] if lab < len(classes) else lab}"
            clips.append(wandb.Audio(clip.reshape(-1).numpy(), sample_rate=samples.sample_rate,
                                     caption=caption))
        for logger in loggers:
            logger.experiment.log({"val/audio": clips, "trainer/global_step": trainer.global_step})
