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

from diffplat.samplers.base import Denoise, defaults, setup
from diffplat.samplers.options import S_NOISE, churn, eta
from diffplat.schedules import Schedule


def _churn(model, y: Tensor, i: int, steps: int, s_churn: float, s_tmin: float,
           s_tmax: float, s_noise: float,
           gamma: float | None = None) -> tuple[Tensor, float, int | None]:
    """Raise the noise level by a factor 1 + g before step i (Karras et al. 2022, Alg. 2
    lines 4-6): level_hat = level (1 + g), y += s_noise sqrt(level_hat^2 - level^2) z, for
    levels in [s_tmin, s_tmax]. g = min(s_churn / K, sqrt(2) - 1) (Karras), or, with
    ``gamma``, the fixed g = gamma of VEDA's sampler (Zhang et al., AAAI 2026; its
    ``coord_noise_std`` in models/fm.py ``_generate``), which is not capped."""
    level = model.levels[i]
    g = 0.0
    if s_tmin <= level <= s_tmax:
        if gamma is not None:
            g = float(gamma)
        elif s_churn > 0:
            g = min(s_churn / steps, math.sqrt(2) - 1)
    if g == 0.0:
        return y, level, i
    hat = level * (1 + g)
    y = y + model.randn_like(y) * s_noise * math.sqrt(hat**2 - level**2)
    return y, hat, None


def _check_churn(s_churn: float, gamma: float | None) -> None:
    if gamma is not None and not float(gamma) >= 0:  # also NaN
        raise ValueError(f"churn: gamma must be >= 0, got {gamma}")
    if gamma is not None and s_churn > 0:
        raise ValueError("churn: give s_churn (Karras et al.) or gamma (fixed, VEDA), not "
                         f"both; got s_churn={s_churn}, gamma={gamma}")


def sample_euler(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                 s_noise: float = 1.0, gamma: float | None = None, **kw: Any) -> Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2 without the
    second-order correction; churn options as there, or a fixed ``gamma``: see ``_churn``).
    One evaluation per step."""
    return _euler(denoise, noise, schedule, steps, s_churn, s_tmin, s_tmax, s_noise, gamma,
                  **defaults("euler", schedule, kw))


def _euler(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, s_churn: float,
           s_tmin: float, s_tmax: float, s_noise: float, gamma: float | None,
           **kw: Any) -> Tensor:
    _check_churn(s_churn, gamma)
    model, y = setup(denoise, noise, schedule, steps, **kw)
    for i in range(steps):
        y, level, at = _churn(model, y, i, steps, s_churn, s_tmin, s_tmax, s_noise, gamma)
        den = model(y, i=at, level=level)
        nxt = model.levels[i + 1]
        # y + d (next - level) with d = (y - den) / level, in one fused pass
        y = torch.lerp(den, y, nxt / level)
        model.step_done(i, y, den)
    return model.finish(y, steps)


def sample_heun(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                s_noise: float = 1.0, gamma: float | None = None, **kw: Any) -> Tensor:
    """Heun's 2nd-order method, Karras et al. (2022) Alg. 2 with its churn (Euler on the
    final step to 0; a fixed ``gamma`` instead of ``s_churn``: see ``_churn``).
    2K - 1 evaluations for K steps."""
    _check_churn(s_churn, gamma)
    model, y = setup(denoise, noise, schedule, steps, **defaults("heun", schedule, kw))
    for i in range(steps):
        y, level, at = _churn(model, y, i, steps, s_churn, s_tmin, s_tmax, s_noise, gamma)
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


#: VEDA's annealing (Zhang et al., AAAI 2026): gamma 0.4 (its README's and use_qm9_model.sh's
#: ``--coord_noise_std_dev``; the code's default is 0, no churn) for levels in [0.03, 3]
ANNEAL = {"gamma": 0.4, "s_tmin": 0.03, "s_tmax": 3.0}


def sample_euler_anneal(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int,
                        *, gamma: float = ANNEAL["gamma"], s_tmin: float = ANNEAL["s_tmin"],
                        s_tmax: float = ANNEAL["s_tmax"], s_noise: float = 1.0,
                        **kw: Any) -> Tensor:
    """VEDA's sampler (Zhang et al., AAAI 2026; models/fm.py ``_generate``): Euler with a
    fixed churn, level_hat = level (1 + gamma) for levels in [s_tmin, s_tmax], fresh noise
    of std sqrt(level_hat^2 - level^2), then the Euler step from level_hat to the next
    level. ``euler`` with these options; VEDA samples on the ``arcsin`` spacing
    (``spacing="arcsin", level_min=0.001``). One evaluation per step."""
    return _euler(denoise, noise, schedule, steps, 0.0, s_tmin, s_tmax, s_noise, gamma,
                  **defaults("euler", schedule, kw))  # euler's grid


#: the options of each sampler here beyond the grid's (diffplat.samplers.options)
OPTIONS = {
    "euler": churn(),
    "heun": churn(),
    "euler_anneal": churn(ANNEAL["gamma"], ANNEAL["s_tmin"], ANNEAL["s_tmax"], s_churn=False),
    "euler_ancestral": (eta(1.0), S_NOISE),
    "ddim": (eta(0.0), S_NOISE),
    "ddpm": (eta(1.0), S_NOISE),
}


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
    return _ancestral(denoise, noise, schedule, steps, eta, s_noise,
                      **defaults("euler_ancestral", schedule, kw))


def _ancestral(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, eta: float,
               s_noise: float, **kw: Any) -> Tensor:
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
    return _ancestral(denoise, noise, schedule, steps, eta, kw.pop("s_noise", 1.0),
                      **defaults("ddim", schedule, kw))


def sample_ddpm(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                eta: float = 1.0, **kw: Any) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2): the posterior q(x_s | x_t, x0_hat)."""
    return _ancestral(denoise, noise, schedule, steps, eta, kw.pop("s_noise", 1.0),
                      **defaults("ddpm", schedule, kw))
