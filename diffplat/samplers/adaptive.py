"""An adaptive ODE solver: Dormand-Prince 5(4) with error control (Dormand & Prince 1980).

The probability-flow ODE is integrated in s = log(level), where it reads dy/ds = y - D(y, e^s),
from the largest to the smallest noise level; a last evaluation of D returns the clean data.
The number of evaluations depends on the tolerances and is reported through ``stats``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffplat.samplers.base import Denoise, setup
from diffplat.samplers.grids import level_range
from diffplat.samplers.options import SamplerOption
from diffplat.schedules import Schedule

# Butcher tableau of Dormand-Prince 5(4) (Hairer, Norsett & Wanner, Table II.5.2).
_C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]
_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_B5 = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
_B4 = [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]
_E = [b5 - b4 for b5, b4 in zip(_B5, _B4)]

#: the options of the adaptive sampler beyond the grid's (diffplat.samplers.options)
OPTIONS = (SamplerOption("rtol", float, 1e-3, "relative tolerance of the error norm", low=0,
                         above=True),
           SamplerOption("atol", float, 1e-3, "absolute tolerance of the error norm", low=0),
           SamplerOption("max_nfe", int, 10_000, "give up beyond this many evaluations",
                         low=1))


def sample_adaptive(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int = 20, *,
                    rtol: float = 1e-3, atol: float = 1e-3, max_nfe: int = 10_000,
                    **kw: Any) -> Tensor:
    """Adaptive Dormand-Prince 5(4). ``steps`` only sets the first step size.

    Args:
        rtol, atol: tolerances of the mixed error norm (RMS over all elements).
        max_nfe: give up with an error beyond this many evaluations.
    """
    kw.pop("spacing", None)
    model, y = setup(denoise, noise, schedule, 1, spacing="karras", **kw)
    s_end_level = level_range(schedule, kw.get("level_min"), kw.get("level_max"))[0]
    s, s_end = math.log(model.levels[0]), math.log(s_end_level)
    h = (s_end - s) / max(steps, 1)

    def f(y_: Tensor, s_: float) -> Tensor:
        return y_ - model(y_, level=math.exp(s_))

    k1 = f(y, s)
    accepted = rejected = 0
    while (s - s_end) > 1e-12:
        if model.nfe > max_nfe:
            raise RuntimeError(f"adaptive solver exceeded max_nfe={max_nfe} evaluations")
        h = max(h, s_end - s)  # h < 0: do not step past the end
        ks = [k1]
        for j in range(1, 7):
            inc = sum((a * k for a, k in zip(_A[j], ks) if a != 0.0), torch.zeros_like(y))
            ks.append(f(y + inc * h, s + _C[j] * h))
        y_new = y + h * sum(b * k for b, k in zip(_B5, ks) if b != 0.0)
        err = h * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        norm = float(torch.sqrt(torch.mean((err / scale) ** 2)))
        if norm <= 1.0:
            y, s, k1 = y_new, s + h, ks[6]  # first-same-as-last
            accepted += 1
            model.step_done(accepted - 1, y, y - k1, level=math.exp(s))
        else:
            rejected += 1
        factor = 5.0 if norm == 0 else min(5.0, max(0.2, 0.9 * norm ** (-1 / 5)))
        h = h * factor
    den = model(y, level=s_end_level)
    if model.stats is not None:
        model.stats.update(accepted=accepted, rejected=rejected)
    return model.finish(den, accepted)
