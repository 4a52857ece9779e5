"""Progress bars for the long parts of a command (data preparation, metrics, sampling).

Bars go to stderr and only when it is a terminal (tqdm's ``disable=None``), so logs and
tests stay clean; ``DIFFPLAT_PROGRESS=0`` turns them off, ``=1`` forces them on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any


def _disabled() -> bool | None:
    flag = os.environ.get("DIFFPLAT_PROGRESS")
    if flag is None:
        return None  # tqdm decides: on for a terminal
    return flag.strip() in ("0", "false", "no", "off")


def bar(iterable: Iterable[Any] | None = None, desc: str = "", total: int | None = None,
        unit: str = "it", **kw: Any):
    """A tqdm bar (a plain iterator when tqdm is off)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=_disabled(),
                leave=False, dynamic_ncols=True, **kw)
