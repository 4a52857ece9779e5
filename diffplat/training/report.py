"""What a training run prints and writes as it goes: the model's size at the start, one
line and ``metrics.json`` at each validation, a summary at the end (``diffplat.progress``).
A mixin of DiffusionModule (its own hooks, in the order Lightning calls a module's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from diffplat.progress import say


class RunReport:
    """DiffusionModule's ``on_fit_start``, ``on_validation_end`` and ``on_fit_end``."""

    def on_fit_start(self) -> None:
        n = sum(p.numel() for p in self.backbone.parameters())
        k = torch.get_num_threads()
        threads = ""
        if self.device.type == "cpu":
            from diffplat.runtime import thread_note

            note = thread_note()
            threads = f", {k} thread{'s' * (k > 1)}" + (f" ({note})" if note else "")
        steps = self.trainer.max_steps
        if self.trainer.is_global_zero:
            say(f"model: {type(self.backbone).__name__}, {n / 1e6:.2f}M parameters (and their "
                f"EMA); {self.domain.name} on {self.device.type}{threads}"
                + (f"; {steps} steps" if steps and steps > 0 else ""))

    def on_validation_end(self) -> None:
        """At each validation of ``fit``: one line (step and every ``val/`` metric) and
        ``metrics.json`` beside the checkpoint (``diffplat.progress.write_metrics``)."""
        trainer = self.trainer
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        from diffplat.progress import validation_line, write_metrics

        metrics = _val_metrics(trainer.callback_metrics)
        if not metrics:
            return
        self._last_validation = {"step": int(self.global_step),
                                 "epoch": int(self.current_epoch), "metrics": metrics}
        path = write_metrics(_checkpoint_dir(trainer), self._last_validation)
        self._metrics_path = path
        say(validation_line(self._last_validation))

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        from diffplat.progress import fit_summary

        say(fit_summary(int(self.global_step), getattr(self, "_last_validation", None),
                        getattr(self, "_metrics_path", None),
                        self.trainer.check_val_every_n_epoch))


def _val_metrics(callback_metrics: dict[str, Any]) -> dict[str, float]:
    """The ``val/`` scalars Lightning holds after a validation, as floats."""
    out = {}
    for key, value in callback_metrics.items():
        if key.startswith("val/") and (not hasattr(value, "numel") or value.numel() == 1):
            out[key] = float(value)
    return out


def _checkpoint_dir(trainer: pl.Trainer) -> Path:
    """Where the run's ``last.ckpt`` goes: the Autosave folder, else ModelCheckpoint's,
    else ``<default_root_dir>/checkpoints``."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from diffplat.training.callbacks import Autosave

    for cb in trainer.callbacks:
        if isinstance(cb, Autosave):
            return cb.path(trainer).parent
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            return Path(cb.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"
