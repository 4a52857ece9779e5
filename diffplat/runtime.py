"""Process-wide numerics settings, in one documented place.

**Subnormal floats.** Adam's second moments and zero-initialised output layers drift into
subnormal (denormal) floats, which x86 CPUs process about 50 times slower; flushing them to
zero changes nothing measurable in training or sampling and keeps CPU steps fast. The
``diffplat`` command and ``DiffusionModule.setup`` on a CPU call ``flush_subnormals()``.
Code that must not run in that mode (SciPy's cKDTree can crash building a tree under
flush-to-zero) wraps itself in ``subnormals_kept()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def flush_subnormals(enabled: bool = True) -> None:
    """Flush subnormal floats to zero on this thread (x86 FTZ/DAZ), or stop doing so."""
    import torch

    torch.set_flush_denormal(enabled)


def subnormals_flushed() -> bool:
    """Whether this thread flushes subnormal floats (the smallest one then reads as 0)."""
    import numpy as np

    return bool(np.float64(5e-324) * np.float64(2.0) == 0.0)


@contextmanager
def subnormals_kept() -> Iterator[None]:
    """Keep subnormal floats inside the block; the thread's mode is restored after it."""
    flushed = subnormals_flushed()
    if flushed:
        flush_subnormals(False)
    try:
        yield
    finally:
        if flushed:
            flush_subnormals(True)
