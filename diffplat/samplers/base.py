"""What every sampler shares: the noise-level grid and the variance-exploding view of D.

Samplers integrate in the frame of Karras et al. (2022): y = x / alpha and noise level
sigma~ = sigma / alpha, where the probability-flow ODE reads dy/dsigma~ = (y - D) / sigma~
for every schedule. ``VEModel`` maps (y, sigma~) back to the caller's denoise(x_t, t),
counts function evaluations (NFE), checks for NaN/Inf, and feeds the callback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffplat.checks import positive_int
from diffplat.errors import NonFiniteError
from diffplat.noise import GaussianNoise, NoiseSpace
from diffplat.samplers.grids import check_levels, noise_levels, with_defaults
from diffplat.schedules import Schedule

Denoise = Callable[[Tensor, Tensor], Tensor]


class VEModel:
    """The caller's denoiser seen in the variance-exploding frame, with bookkeeping.

    Args:
        denoise: ``denoise(x_t, t) -> x0_hat`` with t of shape [B].
        noise: starting standard-normal noise; fixes batch size, dtype and device.
        schedule: the schedule; its noise levels come from ``levels``.
        levels: the K + 1 grid from ``noise_levels`` (float64, ending in 0).
        noise_space, generator: for samplers that inject fresh noise.
        callback: called after each step with a dict (step, x, t, level, denoised, nfe).
        stats: a dict filled with "nfe" and "steps" when given.
        check_finite: raise NonFiniteError on a NaN/Inf denoiser output (default True).
    """

    def __init__(self, denoise: Denoise, noise: Tensor, schedule: Schedule, levels: Tensor,
                 noise_space: NoiseSpace | None = None,
                 generator: torch.Generator | None = None,
                 callback: Callable[[dict], Any] | None = None,
                 stats: dict | None = None, check_finite: bool = True):
        self.denoise = denoise
        self.schedule = schedule
        self.space = noise_space or GaussianNoise()
        self.generator = generator
        self.callback = callback
        self.stats = stats
        self.check_finite = check_finite
        self.nfe = 0
        self.batch = self.space.batch_size(noise)
        self.dtype, self.device = noise.dtype, noise.device
        self.levels = levels.tolist()
        # Precompute t [B] and alpha at every grid point so a step costs no schedule maths.
        self._grid = [self._point(lv) for lv in self.levels]

    def _point(self, level: float) -> tuple[Tensor, float]:
        if level == 0.0:
            t = torch.zeros((), dtype=torch.float64)
        else:
            t = self.schedule.t_from_noise_level(torch.tensor(level, dtype=torch.float64))
        alpha = float(self.schedule.alpha(t))
        t_b = torch.full((self.batch,), float(t), dtype=self.dtype, device=self.device)
        return t_b, alpha

    def __call__(self, y: Tensor, i: int | None = None, level: float | None = None) -> Tensor:
        """D at grid point i, or at an arbitrary noise level (for churn / adaptive steps)."""
        if i is not None:
            t_b, alpha = self._grid[i]
            level = self.levels[i]
        else:
            t_b, alpha = self._point(level)
        out = self.denoise(y if alpha == 1.0 else y * alpha, t_b)
        self.nfe += 1
        # the sum is NaN or Inf when any element is: one pass without a temporary; only
        # then the exact test (max |D|), since huge finite values can overflow the sum
        if self.check_finite and not torch.isfinite(out.sum()) \
                and not torch.isfinite(out.abs().amax()):
            where = f"step {i}" if i is not None else f"noise level {level:.4g}"
            raise NonFiniteError(
                f"denoiser returned NaN or Inf at {where} (t={float(t_b[0]):.4f}, "
                f"evaluation {self.nfe}); check the model's weights and the sampler settings")
        return out

    def randn_like(self, y: Tensor) -> Tensor:
        return self.space.project(self.space.sample_like(y, self.generator))

    def step_done(self, step: int, y: Tensor, denoised: Tensor,
                  level: float | None = None) -> None:
        """Report a finished step; ``level`` defaults to the grid point after ``step``."""
        if self.callback is not None:
            if level is None:
                level = self.levels[step + 1]
                t_b, alpha = self._grid[step + 1]
            else:
                t_b, alpha = self._point(level)
            self.callback({"step": step, "x": y * alpha, "t": t_b, "level": level,
                           "denoised": denoised, "nfe": self.nfe})

    def finish(self, y: Tensor, steps: int) -> Tensor:
        if self.stats is not None:
            self.stats.update(nfe=self.nfe, steps=steps)
        return y


def defaults(name: str, schedule: Schedule, kw: dict[str, Any], **own: Any) -> dict[str, Any]:
    """A sampler's options: ``kw`` (the caller's) and ``own`` (its keyword arguments, None
    where the caller gave none), with sampler ``name``'s defaults for ``schedule``'s family
    filled in where missing or None (diffplat.samplers.grids.SAMPLER_DEFAULTS). A refinement
    (``start`` given: SDEdit from a given state) keeps the generic grid: the table was
    measured for generation from noise."""
    options = {**own, **kw}
    if options.get("start") is not None:
        return options
    return with_defaults(name, schedule, options)


def setup(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int,
          spacing: str | None = None, rho: float | None = None, level_min: float | None = None,
          level_max: float | None = None, denoise_final: bool | None = True,
          levels: Any = None, start: Tensor | None = None,
          **kw: Any) -> tuple[VEModel, Tensor]:
    """Build the grid and the model view; returns (model, y at the first level).

    ``levels`` (K + 1 noise levels, e.g. a fitted schedule) replaces the spacing options.
    ``start`` (a clean state shaped like ``noise``, with ``level_max`` its noise level):
    SDEdit (Meng et al. 2022), the reverse process starts from y = start + level_max * noise,
    the start noised to that level (x_t = alpha x0 + sigma eps in the VE frame y = x / alpha),
    instead of from pure noise; the K steps then span [level_max, 0]."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    if levels is not None:
        levels = check_levels(levels, positive_int(steps, "steps"))
    else:
        levels = noise_levels(schedule, steps, spacing, rho, level_min, level_max,
                              True if denoise_final is None else denoise_final)
    model = VEModel(denoise, noise, schedule, levels, **kw)
    if start is None:
        return model, noise * levels[0].item()
    if level_max is None or levels[0].item() > level_max * (1 + 1e-9):
        raise ValueError(f"a start state needs a grid that begins at its level_max "
                         f"({level_max}); this one begins at {levels[0].item():.4g}")
    return model, start.to(noise) + noise * levels[0].item()


def step_order(i: int, steps: int, order: int, lower_order_final: bool,
               levels: list[float]) -> int:
    """The order of a multistep method at step i (0-based) of ``steps``.

    Warm-up: step i has at most i + 1 points of history. ``lower_order_final`` lowers the
    order towards the end, at most ``steps - i`` (the last step first order, the one before
    it second; diffusers' UniPC always does this, its DPM-Solver and DEIS below 15 steps). A
    step into noise level 0 is always first order: it returns the denoiser's estimate, since
    every higher-order term is multiplied by exp(-h) = 0 or needs lambda = inf.
    """
    if levels[i + 1] == 0.0:
        return 1
    p = min(order, i + 1)
    return min(p, steps - i) if lower_order_final else p


def check_order(name: str, order: int, highest: int) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= highest:
        raise ValueError(f"{name}: order must be an integer from 1 to {highest}, got {order!r}")
    return order


def combine(base: Tensor, scale: float, terms: list[tuple[float, Tensor]]) -> Tensor:
    """scale * base + sum(w * t): a new tensor, in one pass per term."""
    out = base * scale
    for w, t in terms:
        if w != 0.0:
            out.add_(t, alpha=w)
    return out
