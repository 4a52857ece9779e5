"""``auto``: for a given number of evaluations, the configuration measured best.

The tables come from benchmarks/error_vs_nfe.py (``--auto``): on exact-denoiser Gaussian
mixtures (2-D and 16-D) they hold, per NFE, our fixed-grid configuration whose worst ratio
to our best over both mixtures and both metrics (ODE-endpoint error, sliced W2) is
smallest, measured on DDPM's linear table for variance-preserving schedules ("vp") and on
EDM's sigmas for the others ("ve": their noise levels reach 0.002, the VP tables stop near
0.01). An NFE between two measured ones takes the entry of the nearest smaller one; options
given by the caller override the table's. Every entry starts at noise level 20 (below the
schedule's top), which assumes data of standard deviation well below 20, as in every domain
here, and ends at the schedule's smallest level without a final denoising step. The
sampler itself (``diffplat.samplers.sample_auto``) is registered with the others.
"""

from __future__ import annotations

import math
from typing import Any

from diffplat.checks import positive_int
from diffplat.schedules import Schedule

_END = {"denoise_final": False, "level_max": 20.0}

#: family -> NFE -> (sampler, options); measured 2026-12-02, docs/core.md (few-step table)
TABLE: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {
    "vp": {
        5: ("ipndm", {"order": 2, "spacing": "polynomial", **_END,
                      "lower_order_final": False}),
        10: ("ipndm", {"order": 4, "spacing": "polynomial", **_END,
                       "lower_order_final": False}),
        20: ("ipndm", {"order": 4, "spacing": "polynomial", **_END,
                       "lower_order_final": True}),
    },
    "ve": {
        5: ("deis", {"order": 3, "variable": "log_rho", "spacing": "karras", **_END,
                     "lower_order_final": False}),
        10: ("deis", {"order": 4, "variable": "log_rho", "spacing": "karras", **_END,
                      "lower_order_final": False}),
        20: ("deis", {"order": 4, "variable": "log_rho", "spacing": "karras", **_END,
                      "lower_order_final": True}),
    },
}


def family(schedule: Schedule | None) -> str:
    """The table a schedule uses: "vp" for variance-preserving ones, "ve" otherwise."""
    return "vp" if schedule is not None and schedule.family == "vp" else "ve"


def choose(nfe: int, schedule: Schedule | None = None) -> tuple[str, dict[str, Any]]:
    """The (sampler, options) that ``auto`` runs for ``nfe`` evaluations on ``schedule``."""
    positive_int(nfe, "NFE")
    table = TABLE[family(schedule)]
    key = max([k for k in table if k <= nfe], default=min(table))
    name, options = table[key]
    return name, {k: (math.inf if v == "inf" else v) for k, v in options.items()}
