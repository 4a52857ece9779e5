"""What a command shows while it runs: progress, and nothing from the libraries that a user
cannot act on.

**Progress.** Bars are for terminals. Sampling, metrics and data preparation draw a tqdm bar
on stderr only when it is a terminal (``bar``). Training (``diffplat fit``) draws Lightning's
bar when its stream, stdout, is a terminal, and otherwise prints a plain line every 30
seconds (``LineProgress``: step, loss, steps per second, time left), so a log file holds
lines, not a megabyte of carriage returns. ``DIFFPLAT_PROGRESS`` overrides the choice: ``0``
no progress at all, ``1`` bars even into a file, ``lines`` plain lines even on a terminal.

**Library noise** (``quiet_libraries``): each message is silenced where it comes from, by
its own text, never all warnings:

* Lightning's "Found N module(s) in eval mode at the start of training": the EMA copy of
  the weights is in eval mode on purpose;
* Lightning's tip to install litlogger, printed by every Trainer;
* the FutureWarning of PyTorch's pytree ``LeafSpec`` that Lightning triggers at every fit;
* wandb's "The anonymous setting has no effect": Lightning's WandbLogger passes
  ``anonymous=None``, which diffplat removes from its init arguments (``drop_wandb_anonymous``).

The model summary table (its "Modules in eval mode" counts the EMA copy) is off by default
(``--trainer.enable_model_summary true`` turns it on); the model's size is one line instead.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable
from typing import Any

ENV = "DIFFPLAT_PROGRESS"
#: seconds between two LineProgress lines
LINE_SECONDS = 30.0


def mode(stream: Any = None) -> str:
    """"bar", "lines" or "off" for progress written to ``stream`` (default stdout, where
    Lightning's bar goes): ``DIFFPLAT_PROGRESS`` if set, else a bar on a terminal and plain
    lines elsewhere."""
    flag = os.environ.get(ENV, "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return "off"
    if flag in ("1", "true", "yes", "on", "bar"):
        return "bar"
    if flag == "lines":
        return "lines"
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


def _disabled() -> bool | None:
    flag = os.environ.get(ENV, "").strip().lower()
    if not flag:
        return None  # tqdm decides: on for a terminal
    return mode() != "bar"


def bar(iterable: Iterable[Any] | None = None, desc: str = "", total: int | None = None,
        unit: str = "it", **kw: Any):
    """A tqdm bar on stderr (a plain iterator when tqdm is off: stderr is not a terminal,
    or ``DIFFPLAT_PROGRESS`` says so)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=_disabled(),
                leave=False, dynamic_ncols=True, **kw)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def progress_callback():
    """A Lightning ProgressBar that prints a plain line every ``LINE_SECONDS`` and at the
    end of training (imported lazily: Lightning is heavy)."""
    from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar

    class LineProgress(ProgressBar):
        """Training progress as plain lines on stdout, for logs and pipes."""

        def __init__(self, every_seconds: float | None = None):
            super().__init__()
            self.every_seconds = LINE_SECONDS if every_seconds is None else every_seconds
            self._enabled = True
            self._start: tuple[float, int] | None = None
            self._last = 0.0
            self._last_step = -1

        @property
        def is_enabled(self) -> bool:
            return self._enabled

        def disable(self) -> None:
            self._enabled = False

        def enable(self) -> None:
            self._enabled = True

        def print(self, *args: Any, **kwargs: Any) -> None:
            print(*args, **kwargs, flush=True)

        def line(self, trainer) -> str:
            """``step 1500/6000 (25%) | train/loss 0.412 | 8.3 steps/s | 9.1 min left``."""
            step, total = trainer.global_step, trainer.max_steps
            parts = [f"step {step}/{total} ({100 * step / total:.0f}%)" if total and total > 0
                     else f"step {step}"]
            for key, value in trainer.progress_bar_metrics.items():
                if isinstance(value, (int, float)):
                    parts.append(f"{key} {value:.4g}")
            if self._start is not None:
                seconds = time.monotonic() - self._start[0]
                done = step - self._start[1]
                if seconds > 0 and done > 0:
                    rate = done / seconds
                    parts.append(f"{rate:.3g} steps/s")
                    if total and total > step:
                        parts.append(f"{_duration((total - step) / rate)} left")
            return " | ".join(parts)

        def on_train_start(self, trainer, pl_module) -> None:
            self._start = (time.monotonic(), trainer.global_step)
            self._last = self._start[0]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            now = time.monotonic()
            if self._enabled and now - self._last >= self.every_seconds:
                self._last = now
                self._last_step = trainer.global_step
                self.print(self.line(trainer))

        def on_train_end(self, trainer, pl_module) -> None:
            if self._enabled and trainer.global_step != self._last_step:
                self.print(self.line(trainer))

    return LineProgress


# -- library noise ---------------------------------------------------------------------------
class _DropMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(self.starts)


_LITLOGGER_TIP = _DropMessages("💡 Tip: For seamless cloud logging")


def quiet_libraries() -> None:
    """Silence the library messages listed in the module docstring, each by its text;
    idempotent."""
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the "
                                              "start of training")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is "
                                              "deprecated", category=FutureWarning)
    names = ["pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"]
    rank_zero = sys.modules.get("lightning_utilities.core.rank_zero")
    loggers = [logging.getLogger(n) for n in names]
    if rank_zero is not None and isinstance(getattr(rank_zero, "log", None), logging.Logger):
        loggers.append(rank_zero.log)
    for logger in loggers:
        if _LITLOGGER_TIP not in logger.filters:
            logger.addFilter(_LITLOGGER_TIP)


def drop_wandb_anonymous(logger: Any) -> None:
    """Lightning's WandbLogger passes ``anonymous=None`` to ``wandb.init``, and wandb warns
    that the setting has no effect; remove it before the run starts."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)


# -- what a training run reports -------------------------------------------------------------
METRICS_FILE = "metrics.json"


def say(text: str) -> None:
    """One line on stdout, drawn above any tqdm bar on screen (and flushed: logs see it)."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def validation_line(report: dict[str, Any]) -> str:
    """``validation at step 3000: loss 0.512 | mmd2 0.00121 | w2 0.0456`` (``val/`` left
    out of the names)."""
    values = " | ".join(f"{k.removeprefix('val/')} {v:.4g}" for k, v in
                        sorted(report["metrics"].items()))
    return f"validation at step {report['step']}: {values}"


def write_metrics(folder: Any, report: dict[str, Any]) -> Any:
    """Write ``report`` (step, epoch, metrics) to ``folder/metrics.json`` atomically (a
    temporary file beside it, fsynced, renamed over it), with the umask's permissions;
    returns the path."""
    import json
    from pathlib import Path

    from diffplat.fileio import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {**report, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return atomic_write_text(folder / METRICS_FILE, json.dumps(data, indent=2) + "\n")


def fit_summary(step: int, report: dict[str, Any] | None, path: Any,
                every: int | None = None) -> str:
    """The line ``fit`` ends with: the step, the last validation and where it is stored
    (``every``: trainer.check_val_every_n_epoch, named when no validation ran)."""
    if report is None:
        cadence = f" is {every}" if every else ""
        return (f"fit ended at step {step}; no validation ran (trainer."
                f"check_val_every_n_epoch{cadence}); `diffplat validate -c CONFIG "
                "--ckpt_path last` scores the model")
    return (f"fit ended at step {step}; last {validation_line(report)} (in {path})")
