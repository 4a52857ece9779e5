"""DPM-Solver++ multistep samplers (Lu et al. 2022, "DPM-Solver++"), data-prediction form.

In the noise-level frame, with lambda = -log(level) and h = lambda_next - lambda, the
exponential integrator is exact for the linear part:

    y_next = (level_next / level) y - expm1(-h) D_hat,

and the 2M variant replaces D by the second-order extrapolation of the last two
evaluations (Lu et al. 2022, Alg. 2). The SDE variant (Alg. 1 of the same paper's SDE
section, k-diffusion's ``sample_dpmpp_2m_sde`` with the midpoint correction) adds noise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffplat.samplers.base import Denoise, setup
from diffplat.schedules import Schedule


def _lam(level: float) -> float:
    return math.inf if level == 0.0 else -math.log(level)


def sample_dpmpp_2m(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int,
                    **kw: Any) -> Tensor:
    """DPM-Solver++(2M), deterministic; first-order on the first and last step."""
    model, y = setup(denoise, noise, schedule, steps, **kw)
    old = None
    h_last = 0.0
    for i in range(steps):
        level, nxt = model.levels[i], model.levels[i + 1]
        den = model(y, i=i)
        h = _lam(nxt) - _lam(level)
        if old is None or nxt == 0.0:
            d_hat = den
        else:  # (1 + 1/2r) den - (1/2r) old
            d_hat = torch.lerp(den, old, -h / (2 * h_last))
        # (nxt/level) y - expm1(-h) d_hat, where exp(-h) = nxt/level
        y = torch.lerp(d_hat, y, nxt / level)
        old, h_last = den, h
        model.step_done(i, y, den)
    return model.finish(y, steps)


def sample_dpmpp_2m_sde(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                        eta: float = 1.0, s_noise: float = 1.0, **kw: Any) -> Tensor:
    """DPM-Solver++(2M) SDE with the midpoint correction; eta = 0 gives an ODE solver."""
    model, y = setup(denoise, noise, schedule, steps, **kw)
    old = None
    h_last = 0.0
    for i in range(steps):
        level, nxt = model.levels[i], model.levels[i + 1]
        den = model(y, i=i)
        if nxt == 0.0:
            y = den
        else:
            h = _lam(nxt) - _lam(level)
            eta_h = eta * h
            y = y * (nxt / level * math.exp(-eta_h)) + den * (-math.expm1(-h - eta_h))
            if old is not None:
                r = h_last / h
                y = y + (den - old) * (0.5 * -math.expm1(-h - eta_h) / r)
            if eta:
                y = y + model.randn_like(y) * (
                    nxt * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
            h_last = h
        old = den
        model.step_done(i, y, den)
    return model.finish(y, steps)
