"""Euler, Heun and ancestral samplers (k-diffusion's family), in the noise-level frame.

DDIM is Euler in this frame (Karras et al. 2022, sec. 4; Song et al. 2021 eq. 14), and
DDIM with eta is the ancestral step below with sigma_up scaled by eta: eta = 1 reproduces
the DDPM posterior of Ho et al. (2020) exactly, whatever the schedule. So ``ddim`` and
``ddpm`` are this module's ancestral sampler with eta 0 and 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffplat.samplers.base import Denoise, setup
from diffplat.schedules import Schedule


def _churn(model, y: Tensor, i: int, steps: int, s_churn: float, s_tmin: float,
           s_tmax: float, s_noise: float) -> tuple[Tensor, float, int | None]:
    """Karras et al. Alg. 2 lines 4-6: raise the noise level by gamma before the step."""
    level = model.levels[i]
    gamma = 0.0
    if s_churn > 0 and s_tmin <= level <= s_tmax:
        gamma = min(s_churn / steps, math.sqrt(2) - 1)
    if gamma == 0.0:
        return y, level, i
    hat = level * (1 + gamma)
    y = y + model.randn_like(y) * s_noise * math.sqrt(hat**2 - level**2)
    return y, hat, None


def sample_euler(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                 s_noise: float = 1.0, **kw: Any) -> Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2 without the
    second-order correction; churn options as there). One evaluation per step."""
    model, y = setup(denoise, noise, schedule, steps, **kw)
    for i in range(steps):
        y, level, at = _churn(model, y, i, steps, s_churn, s_tmin, s_tmax, s_noise)
        den = model(y, i=at, level=level)
        nxt = model.levels[i + 1]
        # y + d (next - level) with d = (y - den) / level, in one fused pass
        y = torch.lerp(den, y, nxt / level)
        model.step_done(i, y, den)
    return model.finish(y, steps)


def sample_heun(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                s_noise: float = 1.0, **kw: Any) -> Tensor:
    """Heun's 2nd-order method, Karras et al. (2022) Alg. 2 (Euler on the final step to 0).
    2K - 1 evaluations for K steps."""
    model, y = setup(denoise, noise, schedule, steps, **kw)
    for i in range(steps):
        y, level, at = _churn(model, y, i, steps, s_churn, s_tmin, s_tmax, s_noise)
        den = model(y, i=at, level=level)
        nxt = model.levels[i + 1]
        y_next = torch.lerp(den, y, nxt / level)  # the Euler step
        if nxt > 0:
            # trapezoid: y + (next - level) / 2 * (d + d2), d = (y - den) / level and
            # d2 = (y_next - den2) / next, written as in-place adds
            half = (nxt - level) / 2
            den2 = model(y_next, i=i + 1)
            y_next = y.add(y - den, alpha=half / level).add_(y_next - den2, alpha=half / nxt)
        y = y_next
        model.step_done(i, y, den)
    return model.finish(y, steps)


def ancestral_levels(level: float, nxt: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) with sigma_down^2 + sigma_up^2 = next^2 (k-diffusion)."""
    if nxt == 0.0 or eta == 0.0:
        return nxt, 0.0
    up = min(nxt, eta * math.sqrt(nxt**2 * (level**2 - nxt**2) / level**2))
    return math.sqrt(nxt**2 - up**2), up


def sample_euler_ancestral(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int,
                           *, eta: float = 1.0, s_noise: float = 1.0, **kw: Any) -> Tensor:
    """Ancestral sampling: a deterministic Euler step to sigma_down, then fresh noise of
    size sigma_up. eta = 0 is DDIM, eta = 1 the DDPM posterior (see module docstring)."""
    model, y = setup(denoise, noise, schedule, steps, **kw)
    for i in range(steps):
        level, nxt = model.levels[i], model.levels[i + 1]
        den = model(y, i=i)
        down, up = ancestral_levels(level, nxt, eta)
        y = torch.lerp(den, y, down / level)
        if up > 0:
            y = y + model.randn_like(y) * (s_noise * up)
        model.step_done(i, y, den)
    return model.finish(y, steps)


def sample_ddim(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                eta: float = 0.0, **kw: Any) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12); eta = 0 is deterministic."""
    return sample_euler_ancestral(denoise, noise, schedule, steps, eta=eta, **kw)


def sample_ddpm(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                eta: float = 1.0, **kw: Any) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2): the posterior q(x_s | x_t, x0_hat)."""
    return sample_euler_ancestral(denoise, noise, schedule, steps, eta=eta, **kw)
