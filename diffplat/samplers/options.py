"""Typed sampler options: what each sampler takes, declared once.

A sampler is registered (``diffplat.samplers.register``) with the options it takes, each a
``SamplerOption``: name, type, default, allowed range or values and a one-line help. The
grid's options (``GRID``: spacing, rho, level_min, level_max, denoise_final, levels) and
``check_finite`` are declared here once and every sampler takes them. ``check`` validates
a call's options against the declaration before any work is done: an unknown name is
refused with the valid ones listed, a value of the wrong type or out of range is refused
naming the option and the sampler. What the pipeline passes itself (``generator``,
``noise_space``, ``callback``, ``stats``, a refinement's ``start``) belongs to the call, not
to the user, and is not declared. A default of None means "chosen per schedule": see
``diffplat.samplers.grids`` (``noise_levels``, ``SAMPLER_DEFAULTS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from diffplat.samplers.grids import ARCSIN_RHO, LEVEL_MAX, LEVEL_MIN, SAMPLER_DEFAULTS, spacings

_WORDS = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class SamplerOption:
    """One keyword option of a sampler.

    Args:
        name: the keyword (``sampler(..., name=value)``, ``-o name=VALUE``).
        type: float (integers too), int (no bool), bool, str, or object (anything).
        default: the sampler's own default (None: not set; the help says what that means,
            and ``SAMPLER_DEFAULTS`` may set it per schedule family).
        help: one line for listings and the documentation.
        low, high: the allowed range, inclusive (None: unbounded); ``above``: low excluded.
        choices: the allowed values of a string option.
        none: None is allowed (it asks for the default).
        check: ``check(value)`` raises ValueError for a refused value beyond the above
            (the spacing's name: ``spacings.get``).
        what: the allowed values in words where the type does not say it.
    """

    name: str
    type: type = float
    default: Any = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    above: bool = False
    choices: tuple[str, ...] | None = None
    none: bool = False
    check: Callable[[Any], Any] | None = None
    what: str | None = None

    def allowed(self) -> str:
        """The allowed values in words: "an integer from 1 to 3", "a number >= 0"."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        words = self.what or _WORDS.get(self.type, "any value")
        if self.low is not None and self.high is not None:
            words += f" from {self.low:g} to {self.high:g}"
        elif self.low is not None:
            words += f" {'>' if self.above else '>='} {self.low:g}"
        elif self.high is not None:
            words += f" <= {self.high:g}"
        return words

    def validate(self, value: Any, sampler: str) -> Any:
        """``value`` unchanged if the declaration allows it, else ValueError naming the
        sampler, the option and the allowed values."""
        if value is None and self.none:
            return value
        if not self._fits(value):
            raise ValueError(f"sampler {sampler!r}: {self.name} must be {self.allowed()}, "
                             f"got {value!r}")
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as err:
                raise ValueError(f"sampler {sampler!r}: {self.name}: {err}") from None
        return value

    def _fits(self, v: Any) -> bool:
        kinds = {float: Real, int: Integral, bool: bool, str: str, object: object}
        if not isinstance(v, kinds[self.type]) or (isinstance(v, bool) and self.type
                                                   in (float, int)):
            return False
        if self.choices is not None and v not in self.choices:
            return False
        if self.type in (float, int):
            if self.low is not None and not (v > self.low if self.above else v >= self.low):
                return False  # NaN too
            if self.high is not None and not v <= self.high:
                return False
        return True

    def describe(self, sampler: str | None = None) -> str:
        """One line: name, allowed values, default (with ``sampler``'s defaults per
        schedule family, ``SAMPLER_DEFAULTS``), help."""
        default = "not set" if self.default is None else repr(self.default)
        default += "".join(f", on {family} schedules {table[self.name]!r}"
                           for family, table in SAMPLER_DEFAULTS.get(sampler or "", {}).items()
                           if self.name in table)
        return f"{self.name} ({self.allowed()}; default {default}): {self.help}"


def order(highest: int, default: int) -> SamplerOption:
    return SamplerOption("order", int, default, "the multistep order; lower on the first "
                         "steps (warm-up) and, with lower_order_final, on the last",
                         low=1, high=highest)


def eta(default: float) -> SamplerOption:
    return SamplerOption("eta", float, default, "scale of the noise added at each step "
                         "(0: deterministic, 1: the DDPM posterior)", low=0)


S_NOISE = SamplerOption("s_noise", float, 1.0, "scale of the fresh noise (1: exact)", low=0)
LOWER_ORDER_FINAL = SamplerOption(
    "lower_order_final", bool, None, "step i of K has order at most K - i (not set: true)",
    none=True)


def churn(gamma: float | None = None, s_tmin: float = 0.0, s_tmax: float = math.inf,
          s_churn: bool = True) -> tuple[SamplerOption, ...]:
    """The churn options of Karras et al. (2022, Alg. 2) and VEDA's fixed ``gamma``."""
    own = (SamplerOption("s_churn", float, 0.0, "Karras et al.'s churn: noise level raised "
                         "by min(s_churn / K, sqrt(2) - 1) per step", low=0),) if s_churn else ()
    return (*own,
            SamplerOption("s_tmin", float, s_tmin, "churn only at levels >= s_tmin", low=0),
            SamplerOption("s_tmax", float, s_tmax, "churn only at levels <= s_tmax", low=0),
            S_NOISE,
            SamplerOption("gamma", float, gamma, "a fixed churn factor (VEDA) instead of "
                          "s_churn (not set: none)", low=0, none=True))


#: the grid's options, taken by every sampler (``diffplat.samplers.grids.noise_levels``)
GRID: tuple[SamplerOption, ...] = (
    SamplerOption("spacing", str, None, "the step spacing: " + ", ".join(spacings.names())
                  + " (not set: karras, uniform_t for flow schedules)", none=True,
                  check=spacings.get, what="a step spacing's name"),
    SamplerOption("rho", float, None, "the karras spacing's exponent (not set: 7) or the "
                  f"arcsin spacing's weight (not set: {ARCSIN_RHO:g})", low=0, none=True),
    SamplerOption("level_min", float, None, f"the grid's smallest noise level (not set: "
                  f"{LEVEL_MIN:g}; clipped to the schedule)", low=0, none=True),
    SamplerOption("level_max", float, None, f"the grid's largest noise level (not set: "
                  f"{LEVEL_MAX:g}; clipped to the schedule, inf: its top)", low=0, above=True,
                  none=True),
    SamplerOption("denoise_final", bool, None, "the last step denoises to level 0 (not "
                  "set: true); false: the steps end at the smallest level", none=True),
    SamplerOption("levels", object, None, "an explicit grid (a fitted schedule) that "
                  "replaces the spacing options", none=True,
                  what="K + 1 decreasing noise levels"),
)
#: options every sampler takes: the grid's and the NaN check's
COMMON: tuple[SamplerOption, ...] = (
    *GRID, SamplerOption("check_finite", bool, True, "raise on a NaN or Inf denoiser "
                         "output, naming the step"))
GRID_OPTIONS: tuple[str, ...] = tuple(o.name for o in GRID)


def not_set(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without those that are None (not set), for merging over a table."""
    return {k: v for k, v in options.items() if v is not None}


def check(sampler: str, declared: Iterable[SamplerOption], given: Mapping[str, Any]) -> None:
    """``given`` against sampler ``sampler``'s ``declared`` options: ValueError listing the
    valid names for an unknown one, naming the option for a refused value."""
    table = {o.name: o for o in declared}
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for sampler {sampler!r}; "
                         f"valid: {', '.join(sorted(table))}")
    for key, value in given.items():
        table[key].validate(value, sampler)
