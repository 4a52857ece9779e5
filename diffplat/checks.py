"""Checks of single values that several parts of diffplat share, so that each rule is
written once and says the same thing wherever it fails."""

from __future__ import annotations

from numbers import Integral
from typing import Any


def positive_int(value: Any, name: str) -> int:
    """``value`` if it is an integer >= 1 (a bool is not; numpy integers are), else
    ValueError naming ``name`` (``"steps"``, ``"--nfe"``, ``"copies"``) and the value."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value
