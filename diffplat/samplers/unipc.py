"""UniPC: the unified predictor-corrector of Zhao et al. (2023), data-prediction form.

In the noise-level frame (y = x / alpha, level = sigma / alpha) with lambda = -log(level),
h = lambda_next - lambda and hh = -h, the exact solution of dy/dlambda = D - y is

    y_next = e^{-h} y + int_0^h e^{-(h - tau)} D(lambda + tau) dtau.

UniP-p (the predictor, Zhao et al. 2023 eq. 8 and Alg. 2, B(h) variant) approximates D by
D_0 plus the divided differences D1_k = (D_{-k} - D_0) / r_k of the p - 1 previous
evaluations, r_k = (lambda_{-k} - lambda) / h:

    y_next = e^{-h} y + (1 - e^{-h}) D_0 - B(h) sum_k rho_k D1_k,

with rho solving R rho = b (R_ik = r_k^(i-1), b_i = i! h phi_{i+1}(hh) / B(h); for p = 2
rho = 1/2, Zhao et al. sec. 3.2). UniC-p (the corrector, eq. 9 and Alg. 1) redoes the same
step once D at y_next is known, adding D1 at r = 1 to the differences, which raises the
order by one. The corrected state feeds the next step but D is not evaluated again: one
evaluation per step. B(h) = hh ("bh1") or e^{hh} - 1 ("bh2"), Zhao et al. eq. 14.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from diffplat.samplers.base import Denoise, check_order, combine, defaults, setup, step_order
from diffplat.samplers.options import LOWER_ORDER_FINAL, SamplerOption, order
from diffplat.schedules import Schedule

#: UniPC's B(h) choices (Zhao et al. 2023, sec. 3.2)
VARIANTS = ("bh1", "bh2")
#: the options of UniPC beyond the grid's (diffplat.samplers.options)
OPTIONS = (
    order(3, 3),
    SamplerOption("variant", str, "bh2", "B(h) = h (bh1) or e^h - 1 (bh2, diffusers' default)",
                  choices=VARIANTS),
    SamplerOption("corrector", bool, True, "the UniC corrector (no extra evaluation)"),
    LOWER_ORDER_FINAL,
)


def _lam(level: float) -> float:
    return -math.log(level)


def unipc_weights(h: float, rs: list[float], variant: str, corrector: bool) -> list[float]:
    """The rho of UniP (``corrector=False``, p = len(rs) + 1) or UniC (p = len(rs) + 1 with
    r = 1 appended) for a step of length h with history ratios ``rs``."""
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    p = len(rs) + 1
    # g_i = hh phi_{i+1}(hh), from phi_1(z) = (e^z - 1)/z and phi_{k+1} = (phi_k - 1/k!)/z
    b, g, fact = [], math.expm1(hh) / hh - 1.0, 1.0
    for i in range(1, p + 1):
        b.append(g * fact / b_h)
        fact *= i + 1
        g = g / hh - 1.0 / fact
    if not corrector:
        if p == 1:
            return []
        if p == 2:
            return [0.5]  # Zhao et al. sec. 3.2: the order-2 predictor's simplified rho
        r = np.array(rs, dtype=np.float64)
        mat = np.stack([r**k for k in range(p - 1)])
        return np.linalg.solve(mat, np.array(b[:p - 1])).tolist()
    if p == 1:
        return [0.5]
    r = np.array([*rs, 1.0], dtype=np.float64)
    mat = np.stack([r**k for k in range(p)])
    return np.linalg.solve(mat, np.array(b)).tolist()


def _update(y: Tensor, level: float, nxt: float, hist: list[tuple[float, Tensor]],
            order: int, variant: str, d_new: Tensor | None) -> Tensor:
    """One UniP step from (y, level) to nxt, or its UniC correction when ``d_new`` (D at
    the predicted state) is given. ``hist`` holds (lambda, D) pairs, newest last."""
    lam_s, d0 = hist[-1]
    if nxt == 0.0:
        return d0.clone()
    h = _lam(nxt) - lam_s
    prev = hist[-order:-1][::-1]  # D_{-1}, D_{-2}, ...
    rs = [(lam_k - lam_s) / h for lam_k, _ in prev]
    rho = unipc_weights(h, rs, variant, corrector=d_new is not None)
    b_h = -h if variant == "bh1" else math.expm1(-h)
    # y_next = e^{-h} y + (1 - e^{-h}) D_0 - B(h) sum_k rho_k (D_k - D_0) / r_k, as weights
    w0 = -math.expm1(-h)
    terms = []
    for rho_k, r_k, (_, d_k) in zip(rho, rs, prev):
        w = -b_h * rho_k / r_k
        terms.append((w, d_k))
        w0 -= w
    if d_new is not None:
        w = -b_h * rho[-1]
        terms.append((w, d_new))
        w0 -= w
    return combine(y, nxt / level, [(w0, d0), *terms])


def sample_unipc(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int, *,
                 order: int = 3, variant: str = "bh2", corrector: bool = True,
                 lower_order_final: bool | None = None, **kw: Any) -> Tensor:
    """UniPC-p (Zhao et al. 2023, Alg. 1-2 with B(h)), one evaluation per step.

    Args:
        order: predictor order p from 1 to 3 (the corrector makes it p + 1); lower on the
            first steps (warm-up) and, with ``lower_order_final``, on the last.
        variant: B(h) = "bh1" (hh) or "bh2" (e^hh - 1; diffusers' default).
        corrector: apply UniC after every step that is followed by an evaluation.
        lower_order_final: step i has order at most ``steps - i``.
    """
    check_order("unipc", order, 3)
    if variant not in VARIANTS:
        raise ValueError(f"unipc: variant must be 'bh1' or 'bh2', got {variant!r}")
    kw = defaults("unipc", schedule, kw, lower_order_final=lower_order_final)
    lower_order_final = kw.pop("lower_order_final") is not False
    model, y = setup(denoise, noise, schedule, steps, **kw)
    levels = model.levels
    hist: list[tuple[float, Tensor]] = []
    last: tuple[Tensor, int] | None = None  # (state before the last step, its order)
    for i in range(steps):
        level = levels[i]
        den = model(y, i=i)
        if corrector and last is not None:
            y = _update(last[0], levels[i - 1], level, hist, last[1], variant, den)
        hist = [*hist[-(order - 1):], (_lam(level), den)] if order > 1 else [(_lam(level), den)]
        p = step_order(i, steps, order, lower_order_final, levels)
        last = (y, p)
        y = _update(y, level, levels[i + 1], hist, p, variant, None)
        model.step_done(i, y, den)
    return model.finish(y, steps)
