"""Callbacks every ``diffplat fit`` run gets: a ``last.ckpt`` that is always fresh, a stop
that says it stopped, and optimisation flags that hold on resume.

Lightning's ModelCheckpoint saves on the validation cadence, so a config that validates
rarely (the tiny CPU configs validate once, at the end) wrote nothing until training ended,
and a killed run lost everything. ``Autosave`` keeps ``<dir>/last.ckpt`` fresh by step count
*and* by wall time, whatever the validation cadence, and once more when the process gets
SIGTERM or SIGINT (Ctrl-C): Lightning stops at the next batch boundary, where the state is
consistent, and the run then ends with ``RunStopped`` (``diffplat fit`` exits 128 + the
signal number), never as if it had finished. Writes go through ``AtomicCheckpointIO``, so a
SIGKILL at any moment leaves the previous file.

``ResumedOptimiser`` applies the module's optimisation settings (lr, weight_decay, betas) to
the optimizer and LR scheduler state that ``--ckpt_path`` restored, which otherwise kept the
stored values whatever the flags said.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from diffplat.training.atomic import remove_stale_temporaries
from diffplat.training.runlock import acquire, release, run_folders

LAST = "last.ckpt"


class RunStopped(RuntimeError):
    """A run stopped by a signal before its end; ``exit_code`` is 128 + the signal number
    (143 for SIGTERM, 130 for SIGINT), the shell's convention for a process a signal ended."""

    def __init__(self, signum: int, step: int, max_steps: int, checkpoint: Path | None,
                 saved: bool, root: str, stage: str = "fit"):
        self.signum, self.step, self.checkpoint, self.saved = signum, step, checkpoint, saved
        self.exit_code = 128 + int(signum)
        name = signal.Signals(signum).name + (" (Ctrl-C)" if signum == signal.SIGINT else "")
        if stage != "fit":
            super().__init__(f"stopped by {name} during {stage}; nothing was saved")
            return
        of = f" of {max_steps}" if max_steps and max_steps > 0 else ""
        if saved and checkpoint is not None:
            where = f"saved {checkpoint} at that step"
        elif checkpoint is not None and checkpoint.is_file():
            where = f"not saved at the stop; {checkpoint} holds the last autosave"
        else:
            where = "no checkpoint was written"
        super().__init__(
            f"stopped by {name} at step {step}{of}, before the end of training; {where}; "
            f"resume with the same command and --ckpt_path last (same "
            f"--trainer.default_root_dir {root})")


class Autosave(pl.Callback):
    """Write ``last.ckpt`` every ``every_n_steps`` optimizer steps, every ``every_seconds``
    of wall time, at the end of training and when SIGTERM or SIGINT stops the run.

    Args:
        dirpath: folder of ``last.ckpt`` (default ``<default_root_dir>/checkpoints``, the
            folder of the run's ModelCheckpoint).
        every_n_steps: step interval; 0 turns the step trigger off.
        every_seconds: wall-time interval; 0 turns the time trigger off.
        on_sigterm: save once more when the run is stopped with SIGTERM or SIGINT (Ctrl-C;
            a second Ctrl-C stops at once, without saving).
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
        self._signal: int | None = None
        self._old_sigint: Any = None
        self._locked: list[Path] = []
        #: set when a signal stopped the run: a RunStopped to raise (see DiffplatCLI)
        self.stopped: RunStopped | None = None

    def path(self, trainer: pl.Trainer) -> Path:
        root = Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / \
            "checkpoints"
        return root / LAST

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.stopped, self._signal = None, None
        if stage == "fit" and trainer.is_global_zero:
            # the run folder is locked before anything is written (DiffplatCLI takes it
            # first; this covers a Trainer built by hand); only rank 0 writes here
            for folder in run_folders(trainer.default_root_dir, self.path(trainer).parent):
                acquire(folder, "this run")
                self._locked.append(folder)
            # temporaries of writes that a kill interrupted, never a live writer's
            remove_stale_temporaries(self.path(trainer).parent)

    def _release(self) -> None:
        while self._locked:
            release(self._locked.pop())

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_sigint()
        self._release()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_time = time.monotonic()
        self._last_step = trainer.global_step
        if self.on_sigterm and threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # nohup, `&` in sh
            self._old_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, lambda signum, frame: self._sigint(trainer))

    def _sigint(self, trainer: pl.Trainer) -> None:
        """Ctrl-C: stop at the next batch boundary as SIGTERM does (Lightning's own flag),
        and save there; a second Ctrl-C stops at once."""
        if self._signal is not None:
            self._restore_sigint()
            raise KeyboardInterrupt
        self._signal = signal.SIGINT
        if not trainer.is_global_zero:
            # under DDP, rank 0's flag reaches every rank at the next batch (Lightning
            # broadcasts it), so that all stop at the same step; a rank that stopped on
            # its own would leave the others waiting in a collective
            return
        trainer._signal_connector.received_sigterm = True
        if trainer.is_global_zero:
            print("\ndiffplat fit: Ctrl-C: saving at the end of this step (Ctrl-C again stops "
                  "without saving)", file=sys.stderr)

    def _restore_sigint(self) -> None:
        if self._old_sigint is not None and \
                threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._old_sigint)
        self._old_sigint = None

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
        self._restore_sigint()
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_sigint()
        try:
            stage = trainer.state.fn.value if trainer.state.fn else "fit"
            if isinstance(exception, SIGTERMException):  # Lightning's stop at a boundary
                signum, saved = self._signal or signal.SIGTERM, False
                if self.on_sigterm and stage == "fit":
                    self._save(trainer)
                    saved = self._last_step == trainer.global_step and \
                        self.path(trainer).is_file()
            elif isinstance(exception, KeyboardInterrupt):  # mid-step: nothing consistent
                signum, saved = signal.SIGINT, False
            else:
                return
            self.stopped = RunStopped(signum, trainer.global_step, trainer.max_steps,
                                      self.path(trainer), saved, str(trainer.default_root_dir),
                                      stage)
        finally:
            self._release()


class ResumedOptimiser(pl.Callback):
    """After ``--ckpt_path`` restored the optimizer and the LR scheduler, set what the module's
    hyperparameters say (they hold the explicit ``--model.lr/weight_decay/betas`` flags):
    each param group's ``weight_decay`` and ``betas``, and the learning rate as a new base
    (``initial_lr``, the scheduler's ``base_lrs``), so that the schedule continues from
    where it stood, scaled to the new base. Nothing changes when the values agree (exact
    resume)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hp = pl_module.hparams
        if not all(k in hp for k in ("lr", "weight_decay", "betas")):
            return
        lr, wd = float(hp.lr), float(hp.weight_decay)
        betas = tuple(float(b) for b in hp.betas)
        changes: list[str] = []
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            old = list(getattr(sched, "base_lrs", []))
            if old and any(b != lr for b in old):
                sched.base_lrs = [lr] * len(old)
                for i, (group, base) in enumerate(zip(sched.optimizer.param_groups, old)):
                    group["initial_lr"] = lr
                    group["lr"] = _current_lr(sched, i, group["lr"], base, lr)
                sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
                changes.append(f"lr {lr:g} (was {old[0]:g})")
        for opt in trainer.optimizers:
            for key, value in (("weight_decay", wd), ("betas", betas)):
                groups = [g for g in opt.param_groups if key in g]
                stored = groups[0][key] if groups else value
                if any((tuple(g[key]) if key == "betas" else g[key]) != value for g in groups):
                    for g in groups:
                        g[key] = value
                    changes.append(f"{key} {value} (was {stored})")
        if changes and trainer.is_global_zero:
            print(f"diffplat fit: the resumed optimizer now uses {', '.join(changes)}",
                  file=sys.stderr)


def _current_lr(sched: Any, index: int, lr: float, old_base: float, new_base: float) -> float:
    """The learning rate of this step under the new base: LambdaLR's own formula
    (base x lambda(step)), else the restored rate ``lr`` scaled by new/old base."""
    import torch

    if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
        return new_base * sched.lr_lambdas[index](sched.last_epoch)
    return lr * (new_base / old_base) if old_base else new_base
