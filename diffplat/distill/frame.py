"""What both distillation methods share: the teacher and the student seen in the
variance-exploding frame, the grids they are distilled on, and one deterministic DDIM step.

Samplers integrate in the frame of Karras et al. (2022): y = x_t / alpha(t) at noise level
sigma~ = sigma(t) / alpha(t) (diffplat/samplers/base.py). Distillation works there too, with
one change: the level is per sample (each row of a batch sits at its own grid point), so
``denoise_at`` maps a [B] vector of levels back to the caller's ``denoise(x_t, t)``.

The deterministic DDIM step (Song et al. 2021, eq. 12 with eta = 0) from level s to level
s' in this frame is the straight line through the denoised estimate D:

    y' = D + (s' / s) (y - D),                                                       (1)

which is exactly the first-order step of the probability-flow ODE dy/ds = (y - D) / s
(Karras et al. 2022, eq. 3 and Alg. 1 without the Heun correction). Both Salimans & Ho
(2022) and Song et al. (2023) build their targets from such steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffplat.noise import NoiseSpace
from diffplat.samplers.grids import level_range, noise_levels, spacings
from diffplat.schedules import Schedule

Denoise = Callable[..., Tensor]


def denoise_at(denoise: Denoise, y: Tensor, level: Tensor, schedule: Schedule,
               space: NoiseSpace, cond: dict[str, Any] | None = None) -> Tensor:
    """D(y, level) for per-sample noise levels: ``denoise(alpha * y, t)`` with
    t = t(level) (the schedule's inverse) and alpha = alpha(t).

    Shapes:
        y: the data layout with batch size B; level: [B] float64, every entry > 0;
        returns the denoised estimate with y's layout.
    """
    t = schedule.t_from_noise_level(level.double())
    alpha = schedule.alpha(t).to(y.dtype)
    x_t = space.expand(alpha, y) * y
    return denoise(x_t, t.to(device=y.device, dtype=y.dtype), **(cond or {}))


def ddim_step(y: Tensor, denoised: Tensor, level: Tensor, nxt: Tensor,
              space: NoiseSpace) -> Tensor:
    """Eq. (1): the deterministic DDIM step from ``level`` to ``nxt`` (both [B]); a next
    level of 0 returns ``denoised``."""
    ratio = space.expand((nxt / level).to(y.dtype), y)
    return denoised + ratio * (y - denoised)


def check_spacing(spacing: str | None) -> str | None:
    """A registered continuous spacing (or None for the schedule's default); unknown names
    list the choices."""
    if spacing is None:
        return None
    name = spacing.lower().replace("-", "_")
    spacings.get(name)
    if name in ("leading", "trailing", "linspace"):
        raise ValueError(f"spacing {spacing!r}: distillation needs a continuous spacing "
                         "(karras, uniform_t, polynomial, log_snr, arcsin)")
    return name


def nested_grid(schedule: Schedule, steps: int, rounds: int, spacing: str | None = None,
                level_max: float | None = None) -> Tensor:
    """The fine grid of progressive distillation: ``steps * 2**rounds`` DDIM steps, a
    decreasing float64 tensor of that many + 1 noise levels ending in 0, on ``spacing``
    (default: the schedule's, ``noise_levels``). Round r's student takes every
    ``2**(rounds - r)``-th level of it, so every round's grid halves the one before and the
    final student's K-step grid is ``grid[::2**rounds]`` (Salimans & Ho 2022, Alg. 2)."""
    fine = steps * 2**rounds
    return noise_levels(schedule, fine, spacing, level_max=level_max, denoise_final=True)


def round_grid(fine: Tensor, stride: int) -> Tensor:
    """Every ``stride``-th level of ``fine`` (its first and its final 0 included)."""
    grid = fine[::stride]
    if float(grid[-1]) != 0.0:
        raise ValueError(f"a grid of {len(fine) - 1} steps does not split in steps of "
                         f"{stride}")
    return grid


def karras_levels(schedule: Schedule, points: int, level_min: float | None = None,
                  level_max: float | None = None, rho: float = 7.0) -> Tensor:
    """``points`` noise levels from the top down to the smallest, Karras et al.'s rho
    spacing (2022, eq. 5): the discretisation of consistency distillation (Song et al.
    2023, sec. 5 and App. C: N points between epsilon = 0.002 and T = 80, rho = 7),
    clipped to what the schedule reaches."""
    smin, smax = level_range(schedule, level_min, level_max)
    return spacings.get("karras")(schedule, points, rho, smin, smax)


def per_sample(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` as float64 [B] (a grid's levels at each row's grid point)."""
    return values.to(torch.float64)[index]
