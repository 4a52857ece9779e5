"""Adams-Bashforth samplers on the noise prediction: DEIS and iPNDM.

In the noise-level frame the probability-flow ODE is dy/drho = eps(y, rho) with
eps = (y - D) / rho (rho = sigma / alpha, Zhang & Chen 2023 eq. 11). An explicit multistep
method keeps the last p values eps_k at levels rho_k, extrapolates them by a polynomial
and integrates it over the step:

    y_next = y + sum_k c_k eps_k,      c_k = int_rho^rho_next l_k(v(r)) dr,

with l_k the Lagrange basis on the p nodes in the variable v.

* ``deis``: Zhang & Chen (2023, "DEIS", eq. 14, the tAB-DEIS), with the polynomial in
  v = log rho (diffusers' DEISMultistepScheduler, "logrho") or in v = rho (the variable-step
  linear multistep method of k-diffusion's sample_lms). The weights are exact integrals:
  for v = log rho, int P(u) e^u du = e^u (P - P' + P'' - ...).
* ``ipndm``: improved PNDM (Zhang & Chen 2023, App. D; Liu et al. 2022 PNDM), the fixed
  Adams-Bashforth weights of equal steps, 1, (3, -1)/2, (23, -16, 5)/12 and
  (55, -59, 37, -9)/24, times the step rho_next - rho, with lower orders while the history
  fills up instead of PNDM's Runge-Kutta warm-up.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.polynomial import polynomial as P
from torch import Tensor

from diffplat.samplers.base import Denoise, check_order, combine, defaults, setup, step_order
from diffplat.samplers.options import LOWER_ORDER_FINAL, SamplerOption, order
from diffplat.schedules import Schedule

#: Adams-Bashforth weights for equal steps, newest first (Hairer, Norsett & Wanner III.1).
AB_WEIGHTS = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12],
              4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}

VARIABLES = ("log_rho", "rho")
#: the options of each sampler here beyond the grid's (diffplat.samplers.options)
OPTIONS = {
    "deis": (order(4, 3), SamplerOption("variable", str, "log_rho", "the polynomial's "
                                        "variable: log_rho (diffusers' DEIS) or rho "
                                        "(k-diffusion's LMS)", choices=VARIABLES),
             LOWER_ORDER_FINAL),
    "ipndm": (order(4, 4), LOWER_ORDER_FINAL),
}


def _lagrange(nodes: list[float], k: int) -> np.ndarray:
    """Coefficients (lowest first) of the k-th Lagrange basis polynomial on ``nodes``."""
    coef = np.array([1.0])
    for j, x in enumerate(nodes):
        if j != k:
            coef = P.polymul(coef, np.array([-x, 1.0]) / (nodes[k] - x))
    return coef


def deis_weights(rhos: list[float], rho_next: float, variable: str) -> list[float]:
    """c_k = int_rho0^rho_next l_k(v(r)) dr for nodes rhos (newest first)."""
    if len(rhos) == 1:
        return [rho_next - rhos[0]]
    if variable == "rho":
        # shift to the newest node for conditioning
        nodes = [r - rhos[0] for r in rhos]
        end = rho_next - rhos[0]
        return [float(P.polyval(end, P.polyint(_lagrange(nodes, k))))
                for k in range(len(nodes))]
    # v = log rho: int_{u0}^{u1} L(u) e^u du with u = log r, shifted by u0 = log rho0
    u0 = math.log(rhos[0])
    nodes = [math.log(r) - u0 for r in rhos]
    end = math.log(rho_next) - u0
    out = []
    for k in range(len(nodes)):
        poly = _lagrange(nodes, k)
        alt = np.zeros_like(poly)  # P - P' + P'' - ...
        term, sign = poly, 1.0
        while len(term) and np.any(term != 0):
            alt = P.polyadd(alt, sign * term)
            term, sign = P.polyder(term), -sign
        out.append(rhos[0] * (math.exp(end) * float(P.polyval(end, alt))
                              - float(P.polyval(0.0, alt))))
    return out


def _adams(model, y: Tensor, steps: int, order: int, lower_order_final: bool,
           weights) -> Tensor:
    levels = model.levels
    hist: list[tuple[float, Tensor]] = []  # (rho, rho eps = y - D), newest first
    for i in range(steps):
        level, nxt = levels[i], levels[i + 1]
        den = model(y, i=i)
        hist = [(level, y - den), *hist[:order - 1]]  # eps_k = (y_k - D_k) / rho_k
        p = step_order(i, steps, order, lower_order_final, levels)
        if nxt == 0.0:
            y = den
        else:
            c = weights([r for r, _ in hist[:p]], nxt)
            y = combine(y, 1.0, [(ck / r, d) for ck, (r, d) in zip(c, hist)])
        model.step_done(i, y, den)
    return model.finish(y, steps)


def sample_deis(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                order: int = 3, variable: str = "log_rho", lower_order_final: bool | None = None,
                **kw: Any) -> Tensor:
    """DEIS, the exponential-integrator Adams-Bashforth method of Zhang & Chen (2023),
    tAB-DEIS (eq. 14) in the variance-exploding frame. One evaluation per step.

    Args:
        order: 1 to 4 (1 is DDIM); lower on the first steps and, with
            ``lower_order_final``, the last.
        variable: the polynomial's variable, "log_rho" (diffusers' DEIS) or "rho"
            (k-diffusion's LMS).
    """
    check_order("deis", order, 4)
    if variable not in VARIABLES:
        raise ValueError(f"deis: variable must be one of {', '.join(VARIABLES)}, "
                         f"got {variable!r}")
    kw = defaults("deis", schedule, kw, lower_order_final=lower_order_final)
    lower_order_final = kw.pop("lower_order_final") is not False
    model, y = setup(denoise, noise, schedule, steps, **kw)
    return _adams(model, y, steps, order, lower_order_final,
                  lambda rhos, nxt: deis_weights(rhos, nxt, variable))


def sample_ipndm(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                 order: int = 4, lower_order_final: bool | None = None, **kw: Any) -> Tensor:
    """iPNDM (Zhang & Chen 2023, App. D): fixed Adams-Bashforth weights on eps in rho, with
    a lower-order warm-up. One evaluation per step.

    Args:
        order: 1 to 4; lower on the first steps and, with ``lower_order_final``, the last.
    """
    check_order("ipndm", order, 4)
    kw = defaults("ipndm", schedule, kw, lower_order_final=lower_order_final)
    lower_order_final = kw.pop("lower_order_final") is not False
    model, y = setup(denoise, noise, schedule, steps, **kw)
    return _adams(model, y, steps, order, lower_order_final,
                  lambda rhos, nxt: [w * (nxt - rhos[0]) for w in AB_WEIGHTS[len(rhos)]])
