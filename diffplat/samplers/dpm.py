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

from diffplat.samplers.base import Denoise, check_order, combine, defaults, setup, step_order
from diffplat.samplers.options import LOWER_ORDER_FINAL, S_NOISE, SamplerOption, eta, order
from diffplat.schedules import Schedule


def _lam(level: float) -> float:
    return math.inf if level == 0.0 else -math.log(level)


def sample_dpmpp_2m(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int,
                    **kw: Any) -> Tensor:
    """DPM-Solver++(2M), deterministic; first-order on the first and last step."""
    model, y = setup(denoise, noise, schedule, steps, **defaults("dpmpp_2m", schedule, kw))
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
    model, y = setup(denoise, noise, schedule, steps, **defaults("dpmpp_2m_sde", schedule, kw))
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


#: Coefficient sets of the multistep DPM-Solver++ updates (see sample_dpmpp_3m).
COEFFICIENTS = ("taylor", "dpm_solver")

_THIRD = (order(3, 3), LOWER_ORDER_FINAL,
          SamplerOption("coefficients", str, "taylor", "the 3M update's weights: taylor (the "
                        "paper's) or dpm_solver (the authors' SDE code)", choices=COEFFICIENTS))
#: the options of each sampler here beyond the grid's (diffplat.samplers.options)
OPTIONS = {
    "dpmpp_2m": (),
    "dpmpp_2m_sde": (eta(1.0), S_NOISE),
    "dpmpp_3m": _THIRD,
    "dpmpp_3m_sde": (eta(1.0), S_NOISE, *_THIRD),
}


def _dpmpp_3m(model, y: Tensor, steps: int, order: int, eta: float, s_noise: float,
              lower_order_final: bool, coefficients: str) -> Tensor:
    check_order("dpmpp_3m", order, 3)
    if coefficients not in COEFFICIENTS:
        raise ValueError(f"dpmpp_3m: coefficients must be one of {', '.join(COEFFICIENTS)}, "
                         f"got {coefficients!r}")
    levels = model.levels
    hist: list[tuple[float, Tensor]] = []  # (lambda, D), newest last
    for i in range(steps):
        level, nxt = levels[i], levels[i + 1]
        den = model(y, i=i)
        hist = [*hist[-2:], (_lam(level), den)]
        p = step_order(i, steps, order, lower_order_final, levels)
        if nxt == 0.0:
            y = den
        else:
            h = _lam(nxt) - _lam(level)
            z = h * (1 + eta)  # the SDE's kernel e^{-(1 + eta)(h - tau)}
            # exact weights of D's Taylor terms (tau/h)^k, k = 0, 1, 2, under the kernel
            c0 = -math.expm1(-z)
            c1 = math.expm1(-z) / z + 1
            c2 = 2 * (0.5 - 1 / z - math.expm1(-z) / z**2)
            if coefficients == "dpm_solver":  # the reference code's: midpoint, half c2
                c1 = 0.5 * c0 if p == 2 else c1
                c2 = c2 / 2
            # the divided differences as weights on the stored D's, so the update is one
            # pass per evaluation: D1 ~ (D0 - D_1) / r0; D2 ~ (D1_0 - D1_1) / (r0 + r1)
            w = [c0, 0.0, 0.0]
            if p >= 2:
                r0 = (_lam(level) - hist[-2][0]) / h
                d1_0 = [1 / r0, -1 / r0, 0.0]
                if p == 2:
                    w = [a + c1 * b for a, b in zip(w, d1_0)]
                else:
                    r1 = (hist[-2][0] - hist[-3][0]) / h
                    d1_1 = [0.0, 1 / r1, -1 / r1]
                    d2 = [(a - b) / (r0 + r1) for a, b in zip(d1_0, d1_1)]
                    w = [a + c1 * (b + r0 * c) + c2 * c for a, b, c in zip(w, d1_0, d2)]
            terms = [(wk, d) for wk, (_, d) in zip(w[:p], reversed(hist[-p:]))]
            y = combine(y, nxt / level * math.exp(-eta * h), terms)
            if eta:
                y.add_(model.randn_like(y), alpha=nxt * math.sqrt(-math.expm1(-2 * eta * h))
                       * s_noise)
        model.step_done(i, y, den)
    return model.finish(y, steps)


def sample_dpmpp_3m(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                    order: int = 3, lower_order_final: bool | None = None,
                    coefficients: str = "taylor", **kw: Any) -> Tensor:
    """DPM-Solver++(3M), the third-order multistep data-prediction solver (Lu et al. 2022,
    "DPM-Solver++", sec. 4 and App. B; third order as in the authors' code).

    D is expanded to second order in lambda from the last three evaluations, D0 + (tau/h)
    D1 + (tau/h)^2 D2 with D1 ~ h D' and D2 ~ h^2 D''/2, and each term integrated exactly
    against e^{-(h - tau)}: weights 1 - e^{-h}, phi_2 = (e^{-h} - 1)/h + 1 and
    1 - 2/h - 2 (e^{-h} - 1)/h^2.

    Args:
        order: 1 to 3; lower on the first steps and, with ``lower_order_final``, the last.
        coefficients: "taylor" (the exact weights above) or "dpm_solver": the reference code's
            (LuChengTHU/dpm-solver, diffusers' DPMSolverMultistepScheduler, k-diffusion's
            sample_dpmpp_3m_sde), which uses the midpoint weight (1 - e^{-h})/2 at order 2
            and half the D2 weight at order 3. The halved weight leaves an O(h^3) local
            error, so that variant converges at second order only (tests/test_samplers.py).
    """
    kw = defaults("dpmpp_3m", schedule, kw, lower_order_final=lower_order_final)
    lof = kw.pop("lower_order_final")
    model, y = setup(denoise, noise, schedule, steps, **kw)
    return _dpmpp_3m(model, y, steps, order, 0.0, 1.0, True if lof is None else lof,
                     coefficients)


def sample_dpmpp_3m_sde(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                        eta: float = 1.0, s_noise: float = 1.0, order: int = 3,
                        lower_order_final: bool | None = None, coefficients: str = "taylor",
                        **kw: Any) -> Tensor:
    """DPM-Solver++(3M) SDE (Lu et al. 2022, sec. 5 SDE variant; k-diffusion's
    sample_dpmpp_3m_sde): the data-prediction SDE with noise scale eta. Its linear part
    decays as e^{-(1 + eta) h}, so the Taylor weights of sample_dpmpp_3m are taken at
    z = (1 + eta) h, and fresh noise of std level_next sqrt(1 - e^{-2 eta h}) is added.
    eta = 0 is sample_dpmpp_3m."""
    kw = defaults("dpmpp_3m_sde", schedule, kw, lower_order_final=lower_order_final)
    lof = kw.pop("lower_order_final")
    model, y = setup(denoise, noise, schedule, steps, **kw)
    return _dpmpp_3m(model, y, steps, order, float(eta), float(s_noise),
                     True if lof is None else lof, coefficients)
