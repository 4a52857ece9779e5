"""Step spacings: where a sampler evaluates the denoiser.

A grid is a decreasing float64 tensor of K + 1 noise levels (sigma / alpha, the variance-
exploding frame of Karras et al. 2022). By default it ends in exactly 0, the clean data, so
the last of the K steps returns the denoiser's estimate at the smallest noise level ("denoise
to x0 at the last step"); with ``denoise_final=False`` the K steps end *at* the smallest
level instead, and the sampler returns its state there (diffusers' ``final_sigmas_type=
"sigma_min"``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffplat.checks import positive_int
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
def karras(schedule: Schedule, steps: int, rho: float | None, smin: float,
           smax: float) -> Tensor:
    """Karras et al. (2022, eq. 5): uniform in sigma^(1/rho), rho = 7 by default."""
    rho = 7.0 if rho is None else rho
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


@spacings.register("polynomial")
def polynomial(schedule: Schedule, steps: int, rho: float, smin: float, smax: float) -> Tensor:
    """Uniform in sqrt(t) of the schedule's own time ("time-quadratic": t = u^2 with u
    uniform; Lu et al. 2022, DPM-Solver sec. 3.4), dense near the data."""
    ends = torch.tensor([smax, smin], dtype=torch.float64)
    t_hi, t_lo = schedule.t_from_noise_level(ends).tolist()
    if steps == 1:
        return _levels_from_t(schedule, torch.tensor([t_hi]))
    u = torch.linspace(math.sqrt(t_hi), math.sqrt(t_lo), steps, dtype=torch.float64)
    return _levels_from_t(schedule, u**2)


@spacings.register("log_snr")
def log_snr(schedule: Schedule, steps: int, rho: float, smin: float, smax: float) -> Tensor:
    """Uniform in log-SNR (the grid of DPM-Solver's "logSNR" option)."""
    if steps == 1:
        return torch.tensor([smax], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(smax), math.log(smin), steps,
                                    dtype=torch.float64))


#: rho of the arcsin grid: VEDA's default (``sampling_scheduler_factor_rho``, Zhang et al.
#: 2026); its README's QM9/GEOM runs use 2.5
ARCSIN_RHO = 2.0


@spacings.register("arcsin")
def arcsin(schedule: Schedule, steps: int, rho: float | None, smin: float,
           smax: float) -> Tensor:
    """VEDA's grid (Zhang et al., AAAI 2026, arXiv 2511.09568; models/fm.py of its code):
    with u uniform on [0, 1] and a(u) = 2/pi arcsin(sqrt(u)) (the arcsine law's CDF),
    m(u) = (1 - rho) u + rho a(u) places log(level) = log smin + m(u) (log smax - log smin),
    level K at u = 0. rho = 0 is uniform in log-SNR; rho = 1 crowds the steps at both ends
    (a'(u) -> inf there), rho > 1 more so; the grid stays monotone while
    1 - rho (1 - 2/pi) > 0 (rho < 2.75). Runs over [smin, smax] like every continuous
    spacing: [0.002, 80] by default, so VEDA's [0.001, 80] needs ``level_min=0.001``. As in
    VEDA, a grid that ends in 0 (``denoise_final``) is the K + 1 point grid with its
    smallest level, smin, replaced by 0 (see ``noise_levels``)."""
    rho = ARCSIN_RHO if rho is None else float(rho)
    limit = 1 / (1 - 2 / math.pi)
    if not 0.0 <= rho < limit:
        raise ValueError(f"the arcsin spacing needs 0 <= rho < {limit:.4f} (a decreasing "
                         f"grid), got rho={rho}")
    if steps == 1:
        return torch.tensor([smax], dtype=torch.float64)
    u = torch.linspace(1, 0, steps, dtype=torch.float64)  # u = 1 is smax
    mixed = (1 - rho) * u + rho * (2 / math.pi) * torch.arcsin(u.sqrt())
    levels = torch.exp(math.log(smin) + mixed * (math.log(smax) - math.log(smin)))
    levels[0], levels[-1] = smax, smin  # the ends exactly, not through exp(log(.))
    return levels


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


#: sampler -> schedule family ("vp", "ve", "flow") -> the options a sampler called by name
#: uses where the caller gives none (or None): its grid's ends and spacing, measured per
#: family against diffusers' configurations of the same solver (benchmarks/error_vs_nfe.py
#: --defaults, docs/core.md "Defaults against the peers")
#: (measured 2026-12-08 on the DDPM linear and cosine tables, 2-D and narrow 16-D mixtures,
#: 5 to 20 steps). Variance-exploding and flow schedules keep the generic defaults: Karras
#: (flow: uniform t) on [0.002, 80], ending in a final denoise; ipndm, ddpm and
#: euler_anneal, which have no diffusers counterpart, too.
SAMPLER_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "ddim": {"vp": {"spacing": "uniform_t", "denoise_final": False}},
    "euler": {"vp": {"spacing": "uniform_t", "denoise_final": False}},
    "euler_ancestral": {"vp": {"spacing": "uniform_t", "denoise_final": False}},
    "heun": {"vp": {"spacing": "karras", "level_max": 20.0}},
    "dpmpp_2m": {"vp": {"spacing": "polynomial", "denoise_final": False}},
    "dpmpp_2m_sde": {"vp": {"spacing": "polynomial", "level_max": 20.0,
                            "denoise_final": False}},
    "dpmpp_3m": {"vp": {"spacing": "uniform_t", "denoise_final": False,
                        "lower_order_final": True}},
    "unipc": {"vp": {"spacing": "polynomial", "level_max": 20.0, "denoise_final": False,
                     "lower_order_final": True}},
    "deis": {"vp": {"spacing": "karras", "level_max": 20.0, "denoise_final": False,
                    "lower_order_final": True}},
}


def sampler_defaults(name: str, schedule: Schedule) -> dict[str, Any]:
    """The default options of sampler ``name`` on ``schedule`` (see SAMPLER_DEFAULTS);
    options absent here take ``noise_levels``' defaults and the sampler's own."""
    table = SAMPLER_DEFAULTS.get(name.lower().replace("-", "_"), {})
    return dict(table.get(schedule.family, {}))


def with_defaults(name: str, schedule: Schedule, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with sampler ``name``'s defaults filled in where missing or None."""
    out = dict(options)
    for key, value in sampler_defaults(name, schedule).items():
        if out.get(key) is None:
            out[key] = value
    return out


DISCRETE = frozenset({"leading", "trailing", "linspace"})
#: spacings whose grid ending in 0 replaces their smallest level by 0 instead of appending
#: 0 after it (VEDA's arcsin grid: its u = 0 point becomes the clean data)
REPLACE_LAST = frozenset({"arcsin"})


def noise_levels(schedule: Schedule, steps: int, spacing: str | None = None,
                 rho: float | None = None, level_min: float | None = None,
                 level_max: float | None = None, denoise_final: bool = True) -> Tensor:
    """K + 1 decreasing noise levels: the last one 0, or the smallest level.

    Args:
        schedule: the schedule the model was trained with.
        steps: K >= 1 sampler steps.
        spacing: "karras", "uniform_t", "polynomial", "log_snr", "arcsin", "leading",
            "trailing" or "linspace"; None picks ``default_spacing(schedule)``.
        rho: exponent of the Karras spacing (default 7), or the arcsin spacing's mixing
            weight (default 2, VEDA's).
        level_min, level_max: end levels of the continuous spacings (default 0.002 and 80,
            clipped to the schedule; ``level_max=inf`` keeps the schedule's own top level);
            the discrete spacings use the training steps instead.
        denoise_final: end in 0 (the last step returns the denoiser's x0 estimate at the
            K-th level), or, when False, place all K + 1 levels on the spacing from the
            largest to the smallest level (for the discrete spacings the last one is the
            level of training step 0, as diffusers' ``final_sigmas_type="sigma_min"``).
    """
    positive_int(steps, "steps")
    name = (spacing or default_spacing(schedule)).lower().replace("-", "_")
    fn = spacings.get(name)
    smin, smax = level_range(schedule, level_min, level_max)
    if denoise_final:
        if name in REPLACE_LAST:
            levels = fn(schedule, steps + 1, rho, smin, smax)[:-1]
        else:
            levels = fn(schedule, steps, rho, smin, smax)
        return torch.cat([levels, levels.new_zeros(1)])
    if name not in DISCRETE:
        return fn(schedule, steps + 1, rho, smin, smax)
    levels = fn(schedule, steps, rho, smin, smax)
    last = _from_indices(_discrete(schedule, name), torch.zeros(1))
    if not levels[-1] > last[0]:
        raise ValueError(f"spacing {name!r} already ends at training step 0; use "
                         "denoise_final=True")
    return torch.cat([levels, last])


def check_levels(levels: Any, steps: int) -> Tensor:
    """An explicit grid (e.g. a fitted one) as a float64 tensor, checked: K + 1 strictly
    decreasing levels, all positive except possibly a last 0."""
    grid = torch.as_tensor(levels, dtype=torch.float64).flatten()
    if len(grid) != steps + 1:
        raise ValueError(f"a grid for {steps} steps needs {steps + 1} noise levels, got "
                         f"{len(grid)}")
    if not bool(torch.isfinite(grid).all()) or not bool((grid[:-1] > 0).all()) \
            or grid[-1] < 0 or not bool((grid[:-1] > grid[1:]).all()):
        raise ValueError("noise levels must be finite, strictly decreasing and positive "
                         f"(a last 0 allowed); got {grid.tolist()}")
    return grid
