"""Process-wide numerics settings, in one documented place.

**Subnormal floats.** Adam's second moments and zero-initialised output layers drift into
subnormal (denormal) floats, which x86 CPUs process about 50 times slower; flushing them to
zero changes nothing measurable in training or sampling and keeps CPU steps fast. The
``diffplat`` command and ``DiffusionModule.setup`` on a CPU call ``flush_subnormals()``.
Code that must not run in that mode (SciPy's cKDTree can crash building a tree under
flush-to-zero) wraps itself in ``subnormals_kept()``.

**Threads.** PyTorch starts one OpenMP thread per physical core. When other processes keep
some of those cores busy, the threads wait on each other at every operation: on a shared
2-core machine ``make demo``'s training ran 6 times slower with two threads than with one.
The ``diffplat`` command therefore calls ``apply_threads()``: without an explicit choice it
uses the cores that are idle when it starts (``choose_threads``), less one per DataLoader
worker of a CPU training run (``reserve_for_workers``). ``DIFFPLAT_THREADS=N`` chooses N;
``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``, when set, are left to PyTorch, which honours
them. The Python API (``diffplat.load``, ``diffplat.training.fit``) leaves threads as they
are unless you call ``apply_threads()`` yourself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
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


# -- threads ---------------------------------------------------------------------------------
THREADS_ENV = "DIFFPLAT_THREADS"
#: variables through which a user sets the thread count for PyTorch itself
USER_THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: the thread count apply_threads chose itself (None: the user's, or not applied yet)
_auto: int | None = None


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota
    (a container started with ``--cpus 2``)."""
    cpus = len(_affinity())
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _cpu_times(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over ``cpus`` from /proc/stat; None where there is
    none."""
    busy = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if not (name.startswith("cpu") and name[3:].isdigit()
                        and int(name[3:]) in cpus):
                    continue
                fields = [int(v) for v in values[:8]]  # guest time is inside user time
                idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
                busy += sum(fields) - idle
                total += sum(fields)
    except (OSError, ValueError):
        return None
    return (busy, total) if total else None


def busy_from_stat(before: tuple[int, int], after: tuple[int, int], cpus: int) -> float:
    """Cores kept busy between two ``/proc/stat`` readings (busy, total jiffies summed over
    ``cpus`` CPUs)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return 0.0 if total <= 0 else cpus * max(0, busy) / total


def busy_cores(seconds: float = 0.2) -> float:
    """How many of this process's cores other processes keep busy now: /proc/stat over
    ``seconds`` while this process sleeps, on the CPUs of its affinity mask, scaled to a
    cgroup quota (the 1-minute load average where there is no /proc/stat: it lags, still
    counting a command that has just ended)."""
    import time

    mask = _affinity()
    before = _cpu_times(mask)
    if before is None:
        try:
            return float(os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0.0
    time.sleep(seconds)
    after = _cpu_times(mask)
    if after is None:
        return 0.0
    return busy_from_stat(before, after, len(mask)) * usable_cpus() / len(mask)


def choose_threads(cpus: int, busy: float, default: int, env: Mapping[str, str] | None = None,
                   workers: int = 0) -> tuple[int | None, str]:
    """The torch thread count for a process and why: ``(n, reason)``, or ``(None, reason)``
    to leave PyTorch's own choice (the user set ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``).

    Args:
        cpus: CPUs this process may use (``usable_cpus()``).
        busy: cores other processes keep busy (``busy_cores()``); half a core counts as one.
        default: PyTorch's own count (one per physical core), the most it is given.
        env: the environment (default ``os.environ``); ``DIFFPLAT_THREADS=N`` decides.
        workers: DataLoader worker processes that will compute beside this one.
    """
    env = os.environ if env is None else env
    given = env.get(THREADS_ENV, "").strip()
    if given:
        try:
            n = int(given)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{THREADS_ENV} must be a whole number >= 1, got {given!r}")
        return n, f"{THREADS_ENV}={n}"
    for name in USER_THREAD_ENVS:
        if env.get(name, "").strip():
            return None, f"{name}={env[name].strip()}"
    n = max(1, min(default, cpus - math.floor(busy + 0.5) - workers))
    why = f"{n} of {cpus} cores ({busy:.1f} busy with other processes"
    return n, why + (f", {workers} DataLoader workers)" if workers else ")")


_torch_default: int | None = None
_busy: float | None = None
#: (busy cores, reason) of the choice apply_threads made itself
_chosen: tuple[float, str] = (0.0, "")


def _busy_once() -> float:
    """busy_cores(), measured once per process (main() runs many times in the tests)."""
    global _busy
    if _busy is None:
        _busy = busy_cores()
    return _busy


def apply_threads(busy: float | None = None) -> tuple[int | None, str]:
    """Choose the torch thread count (``choose_threads``) and set it; returns the choice.
    ``busy``: cores busy with other processes (default: measured by ``busy_cores()``, only
    when the user has not chosen)."""
    global _auto, _torch_default, _chosen
    import torch

    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    user = any(os.environ.get(k, "").strip() for k in (THREADS_ENV, *USER_THREAD_ENVS))
    if busy is None:
        busy = 0.0 if user else _busy_once()
    n, why = choose_threads(usable_cpus(), busy, _torch_default)
    _auto = None if user else n
    _chosen = (busy, why)
    if n is not None:
        torch.set_num_threads(n)
    return n, why


def thread_note() -> str:
    """Why this process runs fewer torch threads than it has cores, when ``apply_threads``
    chose so itself (``"1 of 2 cores (1.0 busy with other processes)"``); else ""."""
    import torch

    if _auto is None or torch.get_num_threads() >= usable_cpus():
        return ""
    return f"{_chosen[1]}; DIFFPLAT_THREADS=N chooses"


def reserve_for_workers(workers: int) -> int:
    """One core fewer per DataLoader worker when ``apply_threads`` chose the count itself
    (never below one thread); returns the thread count now in force."""
    global _chosen
    import torch

    if _auto is not None and workers > 0:
        n, why = choose_threads(usable_cpus(), _chosen[0], _auto, env={}, workers=workers)
        torch.set_num_threads(n)
        _chosen = (_chosen[0], why)
    return torch.get_num_threads()
