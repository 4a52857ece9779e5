"""Step spacings: where a sampler evaluates the denoiser.

A grid is a decreasing float64 tensor of K + 1 noise levels (sigma / alpha, the variance-
exploding frame of Karras et al. 2022) ending in exactly 0, the clean data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffplat.registry import Registry
from diffplat.schedules import DiscreteVPSchedule, Schedule

spacings: Registry = Registry("step spacing")


#: Default noise-level range of sampling grids (Karras et al. 2022, sec. 5): starting above
#: 80 or stopping below 0.002 buys nothing measurable, while extreme first or last step
#: ratios wreck second-order methods such as Heun.
LEVEL_MIN, LEVEL_MAX = 0.002, 80.0


def level_range(schedule: Schedule, level_min: float | None = None,
                level_max: float | None = None) -> tuple[float, float]:
    """(smallest, largest) sampling noise level: [level_min, level_max] (default
    [0.002, 80]) intersected with what the schedule reaches."""
    lo, hi = schedule.log_snr_range()
    smin, smax = math.exp(-hi / 2), math.exp(-lo / 2)
    smin = max(smin, LEVEL_MIN if level_min is None else level_min)
    smax = min(smax, LEVEL_MAX if level_max is None else level_max)
    if not smin < smax:
        raise ValueError(f"empty noise-level range [{smin:g}, {smax:g}] for {schedule!r}")
    return smin, smax


def _levels_from_t(schedule: Schedule, t: Tensor) -> Tensor:
    return schedule.noise_level(t.to(torch.float64))


@spacings.register("karras")
def karras(schedule: Schedule, steps: int, rho: float, smin: float, smax: float) -> Tensor:
    """Karras et al. (2022, eq. 5): uniform in sigma^(1/rho)."""
    if steps == 1:
        return torch.tensor([smax], dtype=torch.float64)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = smin ** (1 / rho), smax ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


@spacings.register("uniform_t")
def uniform_t(schedule: Schedule, steps: int, rho: float, smin: float, smax: float) -> Tensor:
    """Uniform in the schedule's own time between the two end levels."""
    ends = torch.tensor([smax, smin], dtype=torch.float64)
    t_hi, t_lo = schedule.t_from_noise_level(ends).tolist()
    if steps == 1:
        return _levels_from_t(schedule, torch.tensor([t_hi]))
    return _levels_from_t(schedule, torch.linspace(t_hi, t_lo, steps, dtype=torch.float64))


@spacings.register("log_snr")
def log_snr(schedule: Schedule, steps: int, rho: float, smin: float, smax: float) -> Tensor:
    """Uniform in log-SNR (the grid of DPM-Solver's "logSNR" option)."""
    if steps == 1:
        return torch.tensor([smax], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(smax), math.log(smin), steps,
                                    dtype=torch.float64))


def _discrete(schedule: Schedule, spacing: str) -> DiscreteVPSchedule:
    if not isinstance(schedule, DiscreteVPSchedule):
        raise ValueError(f"step spacing {spacing!r} needs a discrete schedule (linear or "
                         f"cosine), not {schedule.name!r}")
    return schedule


def _from_indices(schedule: DiscreteVPSchedule, idx: Tensor) -> Tensor:
    return _levels_from_t(schedule, idx.to(torch.float64) / (schedule.num_train_steps - 1))


@spacings.register("leading")
def leading(schedule: Schedule, steps: int, rho: float, smin: float, smax: float) -> Tensor:
    """DDIM's original spacing (diffusers ``timestep_spacing="leading"``)."""
    sched = _discrete(schedule, "leading")
    ratio = sched.num_train_steps // steps
    if ratio < 1:
        raise ValueError(f"{steps} steps exceed the {sched.num_train_steps} training steps")
    return _from_indices(sched, torch.arange(steps - 1, -1, -1) * ratio)


@spacings.register("trailing")
def trailing(schedule: Schedule, steps: int, rho: float, smin: float, smax: float) -> Tensor:
    """Lin et al. (2024) / diffusers ``timestep_spacing="trailing"``: starts at the last step."""
    sched = _discrete(schedule, "trailing")
    n = sched.num_train_steps
    if steps > n:
        raise ValueError(f"{steps} steps exceed the {n} training steps")
    idx = torch.round(torch.arange(n, 0, -n / steps, dtype=torch.float64)) - 1
    return _from_indices(sched, idx[:steps])


@spacings.register("linspace")
def linspace(schedule: Schedule, steps: int, rho: float, smin: float, smax: float) -> Tensor:
    """diffusers ``timestep_spacing="linspace"``: evenly spaced training steps."""
    sched = _discrete(schedule, "linspace")
    if steps > sched.num_train_steps:
        raise ValueError(f"{steps} steps exceed the {sched.num_train_steps} training steps")
    return _from_indices(sched, torch.linspace(sched.num_train_steps - 1, 0, steps,
                                               dtype=torch.float64))


def default_spacing(schedule: Schedule) -> str:
    """The grid a sampler uses when none is named: Karras et al.'s rho = 7 grid on
    [0.002, 80], except uniform time for flow schedules (the rectified-flow habit).

    Karras is the robust choice across schedules: diffusers' "trailing" grid starts at the
    last training step, which for the cosine table is a noise level of 2e4, and Heun's
    first step from there is badly off (docs/core.md). On the linear table at 10 to 20
    evaluations "trailing" is the more accurate of the two on the Gaussian mixture; name
    it with ``spacing="trailing"`` to get diffusers' grid exactly.
    """
    return "uniform_t" if schedule.family == "flow" else "karras"


def noise_levels(schedule: Schedule, steps: int, spacing: str | None = None,
                 rho: float = 7.0, level_min: float | None = None,
                 level_max: float | None = None) -> Tensor:
    """K + 1 decreasing noise levels, the last one 0.

    Args:
        schedule: the schedule the model was trained with.
        steps: K >= 1 sampler steps.
        spacing: "karras", "uniform_t", "log_snr", "leading", "trailing" or "linspace";
            None picks ``default_spacing(schedule)``.
        rho: exponent of the Karras spacing.
        level_min, level_max: end levels of the continuous spacings (default 0.002 and 80,
            clipped to the schedule); the discrete spacings use the training steps instead.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    fn = spacings.get(spacing or default_spacing(schedule))
    smin, smax = level_range(schedule, level_min, level_max)
    levels = fn(schedule, steps, rho, smin, smax)
    return torch.cat([levels, levels.new_zeros(1)])
