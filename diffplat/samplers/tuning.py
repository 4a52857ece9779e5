"""Step schedules fitted to a model: the K noise levels that make a K-step solve closest to a
high-NFE solve from the same noise.

In the spirit of Align Your Steps (Sabour et al. 2024), which picks the levels that
minimise a bound on the sampling error, and of LD3 (Tong et al. 2024), which learns them by
matching a teacher solve on a few hundred samples, but written our way: the objective is
the discrepancy itself,

    J(levels) = mean over the fitting samples of |S_K(noise; levels) - S_ref(noise)|^2,

where S_K is the chosen sampler with K steps on the candidate grid and S_ref the same ODE
solved accurately (UniPC-3 with ``reference_steps`` steps on the Karras grid) from the same
starting noise, to the same smallest level. The free levels are the cumulative shares of
a softmax over K numbers (over 20 for longer grids, whose log-levels then follow a
piecewise-linear warp through 20 knots), which keeps them strictly decreasing between the
fixed top level and the smallest one, and J is minimised over those numbers with Powell's
derivative-free method (scipy), starting from the sampler's own grid. The denoiser is only
called, never differentiated, so any model and domain can be tuned. Deterministic for a fixed noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import Tensor

from diffplat.errors import NonFiniteError
from diffplat.samplers.grids import level_range, noise_levels
from diffplat.samplers.options import GRID_OPTIONS  # noqa: F401 - options that describe the grid
from diffplat.schedules import Schedule

#: smallest share of the log-level range between two neighbouring levels
MIN_SHARE = 1e-4


#: at most this many free parameters: longer grids follow a piecewise-linear warp
MAX_FREE = 20


def _levels_from_params(z: np.ndarray, steps: int, smin: float, smax: float,
                        denoise_final: bool) -> list[float]:
    """The grid of a parameter vector z (M = len(z) <= steps numbers).

    log(level) is a piecewise-linear, decreasing function L(u) on [0, 1] from log smax to
    log smin, with knots at u = j / M whose drops are the softmax shares of z; level i of
    K is exp(L(i / K)), and with ``denoise_final`` the last one is replaced by 0. With
    M = K each of the K gaps is free; with M < K (long grids) the cost of the fit does not
    grow with K, as Align Your Steps interpolates its schedules to more steps."""
    w = np.exp(z - z.max())
    w = w / w.sum() + MIN_SHARE  # every gap at least MIN_SHARE of the log range: no h = 0
    knots = np.concatenate([[0.0], np.cumsum(w / w.sum())])
    m = len(z)
    frac = np.interp(np.arange(steps + 1) / steps, np.arange(m + 1) / m, knots)
    span = math.log(smin) - math.log(smax)
    levels = [math.exp(math.log(smax) + f * span) for f in frac]
    levels[0] = smax
    levels[-1] = 0.0 if denoise_final else smin
    return levels


def _params_from_levels(levels: list[float], m: int, smin: float, smax: float,
                        denoise_final: bool) -> np.ndarray:
    """z whose grid is closest to ``levels``: their log-levels at u = i / K, sampled at
    the M knots (the last level's place taken by smin when it is 0)."""
    k = len(levels) - 1
    logs = [math.log(v) for v in levels[:-1]] + [math.log(levels[-1] if not denoise_final
                                                          else smin)]
    at = np.interp(np.arange(m + 1) / m, np.arange(k + 1) / k, logs)
    gaps = np.maximum(np.diff(-at), 1e-6 * (math.log(smax) - math.log(smin)))
    return np.log(gaps / gaps.sum())


Batch = tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Any]


def fit_levels(sampler: Callable[..., Tensor], batches: list[Batch], schedule: Schedule,
               steps: int, options: dict[str, Any] | None = None, reference_steps: int = 200,
               max_evals: int | None = None, reference: Callable[..., Tensor] | None = None,
               log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Fit the K + 1 levels of ``sampler`` with ``steps`` steps.

    Args:
        sampler: a deterministic sampler function (``samplers.get(name)``).
        batches: a few (denoise, noise, noise_space) triples from the model's own prior:
            ``denoise(x_t, t)`` with the batch's condition, its starting noise, and its
            NoiseSpace (or None for dense Gaussian noise).
        options: the sampler's options; ``level_min``, ``level_max`` and ``denoise_final``
            fix the ends, ``spacing`` the starting grid.
        reference_steps: steps of the accurate reference solve.
        max_evals: objective evaluations (each is one K-step solve of every batch);
            default 40 min(K, MAX_FREE).
        reference: the reference sampler (default UniPC-3).

    Returns:
        {"levels": [...], "objective": J fitted, "initial": J on the starting grid,
         "reference_steps", "evals"}; J is a mean squared distance per element.
    """
    from scipy.optimize import minimize

    from diffplat.samplers.unipc import sample_unipc

    options = dict(options or {})
    denoise_final = bool(options.get("denoise_final", True))
    smin, smax = level_range(schedule, options.get("level_min"), options.get("level_max"))
    start = noise_levels(schedule, steps, options.get("spacing"), options.get("rho"),
                         options.get("level_min"), options.get("level_max"),
                         denoise_final).tolist()
    smax = start[0]
    fixed = {k: v for k, v in options.items() if k not in GRID_OPTIONS}
    ref_fn = reference or sample_unipc
    refs = [ref_fn(den, n, schedule, reference_steps, spacing="karras", level_min=smin,
                   level_max=smax, noise_space=space).double() for den, n, space in batches]
    total = sum(r.numel() for r in refs)

    def objective(levels: list[float]) -> float:
        err = 0.0
        for (den, n, space), r in zip(batches, refs):
            try:
                out = sampler(den, n, schedule, steps, levels=levels, noise_space=space,
                              **fixed)
            except (ArithmeticError, ValueError, NonFiniteError):
                return 1e30  # a grid the sampler cannot use: as bad as it gets
            err += float((out.double() - r).pow(2).sum())
        return err / total if math.isfinite(err) else 1e30

    evals = {"n": 0}

    def f(z: np.ndarray) -> float:
        evals["n"] += 1
        return objective(_levels_from_params(z, steps, smin, smax, denoise_final))

    free = min(steps, MAX_FREE)
    z0 = _params_from_levels(start, free, smin, smax, denoise_final)
    initial = objective(start)
    budget = max_evals or 40 * free
    res = minimize(f, z0, method="Powell",
                   options={"maxfev": budget, "xtol": 1e-3, "ftol": 1e-4})
    best_z = res.x if res.fun < initial else z0
    levels = _levels_from_params(best_z, steps, smin, smax, denoise_final)
    fitted = min(float(res.fun), initial)
    if log is not None:
        log(f"fitted {steps} levels in {evals['n']} solves: discrepancy {initial:.4g} -> "
            f"{fitted:.4g}")
    return {"levels": levels, "objective": fitted, "initial": initial,
            "reference_steps": reference_steps, "evals": evals["n"]}

