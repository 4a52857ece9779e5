"""``auto``: for a given number of evaluations, the configuration measured best.

The table comes from benchmarks/error_vs_nfe.py (``--auto``): on exact-denoiser Gaussian
mixtures (VP and VE schedules, 2-D and 16-D) it is, per NFE, our configuration whose worst
ratio to our best over all four problems and both metrics (ODE-endpoint error, sliced W2)
is smallest. An NFE between two measured ones takes the entry of the nearest smaller one.
Options given by the caller override the table's.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from diffplat.samplers.base import Denoise
from diffplat.schedules import Schedule

#: NFE -> (sampler, options), measured in docs/core.md (few-step table)
TABLE: dict[int, tuple[str, dict[str, Any]]] = {
    5: ("unipc", {"order": 3, "variant": "bh2", "spacing": "log_snr"}),
    10: ("unipc", {"order": 3, "variant": "bh2", "spacing": "log_snr"}),
    20: ("unipc", {"order": 3, "variant": "bh2", "spacing": "karras"}),
}


def choose(nfe: int) -> tuple[str, dict[str, Any]]:
    """The (sampler, options) that ``auto`` runs for ``nfe`` evaluations."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"NFE must be an integer >= 1, got {nfe!r}")
    key = max([k for k in TABLE if k <= nfe], default=min(TABLE))
    name, options = TABLE[key]
    return name, {k: (math.inf if v == "inf" else v) for k, v in options.items()}


def sample_auto(denoise: Denoise, noise: Tensor, schedule: Schedule, steps: int,
                **kw: Any) -> Tensor:
    """The configuration of ``choose(steps)`` (every entry makes one evaluation per step,
    so steps = NFE); explicit options win over the table's."""
    from diffplat import samplers

    name, options = choose(steps)
    return samplers.get(name)(denoise, noise, schedule, steps, **{**options, **kw})
