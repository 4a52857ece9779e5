"""The non-finite policy of training: a NaN or Inf loss, gradient or weight stops the run
naming the step (``on_nonfinite="stop"``), or skips the batch and counts it
(``on_nonfinite="skip"``) up to ``max_skipped_fraction`` of the batches. A mixin of
DiffusionModule (its own hooks)."""

from __future__ import annotations

from typing import Any

import torch

from diffplat.store.checkpoint import nonfinite_tensors


class NonFiniteLossError(FloatingPointError):
    """The training loss, a gradient or the weights became NaN or Inf; the message names
    the step."""


class _SkipStep(Exception):
    """Raised inside the optimizer closure to skip a step whose gradients are not finite."""


class NonFinitePolicy:
    """DiffusionModule's ``_skip``, ``on_before_optimizer_step`` and ``on_train_end``."""

    def _skip(self) -> None:
        """Count a skipped batch; fail past ``max_skipped_fraction`` of the batches."""
        self._skipped = True
        self.skipped_batches += 1
        self.log("train/skipped_batches", self.skipped_batches.float())
        skipped, batches = int(self.skipped_batches), self._batches_done()
        limit = self.hparams.get("max_skipped_fraction", 0.1)
        if skipped > limit * max(batches, 100):
            raise NonFiniteLossError(
                f"{skipped} of {batches} batches skipped for NaN or Inf (model.on_nonfinite="
                f"skip), more than model.max_skipped_fraction={limit:g} allows; the last "
                "checkpoint written before it is kept. Check the data and the learning rate, "
                "or raise model.max_skipped_fraction")

    def on_before_optimizer_step(self, optimizer) -> None:
        """A finite loss can still give NaN or Inf gradients; the step that would write
        them into the weights (and the EMA, and the next checkpoint) is stopped or skipped."""
        if self._skipped:
            return
        grads = [p.grad for p in self.backbone.parameters() if p.grad is not None]
        if not grads:
            return
        norms = torch._foreach_norm(grads)
        if bool(torch.isfinite(torch.stack(norms)).all()):
            return
        step = self._batches_done()
        if self.hparams.on_nonfinite == "skip":
            raise _SkipStep
        raise NonFiniteLossError(
            f"non-finite gradients at step {self.global_step} (batch {step}) with a finite "
            "loss; nothing was applied and the last checkpoint is kept. Lower the learning "
            "rate, check the data, or set model.on_nonfinite=skip")

    def on_train_end(self) -> None:
        bad = nonfinite_tensors(dict(self.state_dict()))
        if bad:
            raise NonFiniteLossError(
                f"training ended with {len(bad)} non-finite tensors (e.g. {', '.join(bad[:3])}"
                f"); {int(self.skipped_batches)} batches were skipped. The last checkpoint "
                "written before it is kept")
        skipped = int(self.skipped_batches)
        if skipped and self.trainer.is_global_zero:
            import sys

            print(f"diffplat fit: skipped {skipped} of {self._batches_done()} batches for NaN "
                  "or Inf (model.on_nonfinite=skip; the run fails past "
                  f"model.max_skipped_fraction={self.hparams.get('max_skipped_fraction', 0.1):g})",
                  file=sys.stderr)


def _nonfinite_inputs(x0: Any, cond: dict[str, Any]) -> list[str]:
    """Names of the batch's floating-point tensors (x0, conditions) that hold NaN or Inf."""
    return nonfinite_tensors({"x0": x0, **{f"cond.{k}": v for k, v in cond.items()}})
