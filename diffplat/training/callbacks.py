"""Callbacks every ``diffplat fit`` run gets: a ``last.ckpt`` that is always fresh.

Lightning's ModelCheckpoint saves on the validation cadence, so a config that validates
rarely (the tiny CPU configs validate once, at the end) wrote nothing until training ended,
and a killed run lost everything. ``Autosave`` keeps ``<dir>/last.ckpt`` fresh by step count
*and* by wall time, whatever the validation cadence, and once more when the process gets
SIGTERM (Lightning stops at the next batch boundary, where the state is consistent). Writes
go through ``AtomicCheckpointIO``, so a SIGKILL at any moment leaves the previous file.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from diffplat.training.checkpoint import remove_stale_temporaries

LAST = "last.ckpt"


class Autosave(pl.Callback):
    """Write ``last.ckpt`` every ``every_n_steps`` optimizer steps, every ``every_seconds``
    of wall time, at the end of training and on SIGTERM.

    Args:
        dirpath: folder of ``last.ckpt`` (default ``<default_root_dir>/checkpoints``, the
            folder of the run's ModelCheckpoint).
        every_n_steps: step interval; 0 turns the step trigger off.
        every_seconds: wall-time interval; 0 turns the time trigger off.
        on_sigterm: save once more when the run is stopped with SIGTERM.
    """

    def __init__(self, dirpath: str | None = None, every_n_steps: int = 500,
                 every_seconds: float = 120.0, on_sigterm: bool = True):
        if every_n_steps < 0 or every_seconds < 0 or not math.isfinite(every_seconds):
            raise ValueError("autosave.every_n_steps and autosave.every_seconds must be >= 0")
        self.dirpath = dirpath
        self.every_n_steps = int(every_n_steps)
        self.every_seconds = float(every_seconds)
        self.on_sigterm = on_sigterm
        self._last_time = 0.0
        self._last_step = -1

    def path(self, trainer: pl.Trainer) -> Path:
        root = Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / \
            "checkpoints"
        return root / LAST

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            # temporaries of writes that a kill interrupted; only rank 0 writes here
            remove_stale_temporaries(self.path(trainer).parent)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_time = time.monotonic()
        self._last_step = trainer.global_step

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == self._last_step:
            return
        trainer.save_checkpoint(self.path(trainer), weights_only=False)
        self._last_step = trainer.global_step
        self._last_time = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        by_steps = self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0
        by_time = (self.every_seconds > 0
                   and time.monotonic() - self._last_time >= self.every_seconds)
        if self.every_seconds > 0 and trainer.world_size > 1:
            by_time = trainer.strategy.broadcast(by_time)  # ranks must agree to save
        if by_steps or by_time:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the final state, always: ModelCheckpoint skips its end-of-training save when it
        # saved earlier in the run (every_n_train_steps), which lost the last steps
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.on_sigterm and isinstance(exception, SIGTERMException):
            self._save(trainer)
