"""Sampling options that a domain declares: the one path by which what only a domain
understands (the SMILES of conformers, a class label, a refinement start) reaches it.

A domain lists its options as ``SamplingOption`` objects in ``Domain.sampling_options``.
The core then knows each one's name, type, help and check without naming any of them:
``Pipeline.sample(num, **options)`` and ``diffplat sample --prior KEY=VALUE`` check the
values given against the declaration (errors name the option as the caller spelled it) and
hand them to ``Domain.sample``; a domain's own command builds its flags from the same
declaration (``add_option_flags``). This module imports nothing heavy, so a plug-in's
command line may import it for ``--help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingOption:
    """One sampling option of a domain.

    Args:
        name: the keyword (``Pipeline.sample(name=...)``, ``--prior name=VALUE``).
        type: the type (or tuple of types) a value must have; ``float`` takes integers too,
            ``int`` takes no bool.
        help: one line for ``--help`` and the documentation.
        many: a list of such values is accepted too (``smiles=["CCO", "CO"]``; a
            command-line flag repeats).
        choices: the values allowed (None: any of the type).
        check: ``check(value, label)`` raises ValueError naming ``label`` when the value is
            refused (``diffplat.checks.positive_int``); None: no check beyond the type.
        flag: the command-line flag of a domain command (default ``--`` and the name with
            dashes).
        metavar: the value's placeholder in ``--help``.
        default: what the domain assumes when the option is not given (for the help only:
            an option not given is not passed at all).
    """

    name: str
    type: type | tuple[type, ...] = str
    help: str = ""
    many: bool = False
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any, str], Any] | None = None
    flag: str | None = None
    metavar: str | None = None
    default: Any = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def validate(self, value: Any, label: str | None = None) -> Any:
        """``value`` unchanged if the declaration allows it, else ValueError naming the
        option as ``label`` (default: its name). None means not given and passes."""
        label = label or self.name
        if value is None:
            return None
        values = list(value) if self.many and isinstance(value, (list, tuple)) else [value]
        if self.many and not values:
            raise ValueError(f"{label} must name at least one value, got {value!r}")
        for v in values:
            self._one(v, label)
        return value

    def _one(self, v: Any, label: str) -> None:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        ok = any(isinstance(v, (int, float)) if t is float else isinstance(v, t)
                 for t in types) and not (isinstance(v, bool) and bool not in types)
        if not ok:
            what = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types)
            raise ValueError(f"{label} must be {what}, got {v!r}")
        if self.choices is not None and v not in self.choices:
            allowed = (repr(self.choices[0]) if len(self.choices) == 1 else
                       "one of " + ", ".join(map(repr, self.choices)))
            raise ValueError(f"{label} must be {allowed}, got {v!r}")
        if self.check is not None:
            self.check(v, label)


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


def check_options(declared: Iterable[SamplingOption] | None, given: Mapping[str, Any],
                  owner: str, label: Callable[[str], str] = str) -> dict[str, Any]:
    """The options ``given`` for a domain (``owner`` names it in errors), checked against
    its declaration: an undeclared name is refused with the declared ones listed, a value
    the declaration refuses raises ValueError naming it as ``label(name)`` (``--prior
    copies`` on the command line). A domain that declares nothing (``None``) gets every
    option unchecked, as its ``prior`` receives them."""
    if declared is None:
        return dict(given)
    table = {o.name: o for o in declared}
    unknown = [k for k in given if k not in table]
    if unknown:
        raise ValueError(f"{owner} has no {', '.join(label(k) for k in unknown)} (unknown "
                         f"sampling option{'s' if len(unknown) > 1 else ''}; its options: "
                         f"{', '.join(table) or 'none'})")
    return {k: table[k].validate(v, label(k)) for k, v in given.items() if v is not None}


def add_option_flags(parser: argparse.ArgumentParser, declared: Iterable[SamplingOption],
                     names: Iterable[str] | None = None, helps: Mapping[str, str] | None = None
                     ) -> None:
    """Add a flag for each declared option (those of ``names``, in that order; default
    all) to a domain command's ``parser``: repeatable for ``many``, ``store_true`` for
    bool, typed otherwise; ``helps`` replaces an option's help where the command says more.
    ``check_option_flags`` checks the parsed values."""
    table = {o.name: o for o in declared}
    for name in (names if names is not None else table):
        o = table[name]
        text = (helps or {}).get(name, o.help)
        if o.type is bool:
            parser.add_argument(o.cli_flag, dest=name, action="store_true", default=None,
                                help=text)
            continue
        kind = o.type if isinstance(o.type, type) else str
        parser.add_argument(o.cli_flag, dest=name, type=kind, choices=o.choices,
                            action="append" if o.many else "store", default=None,
                            metavar=o.metavar, help=text)


def check_option_flags(parser: argparse.ArgumentParser, args: argparse.Namespace,
                       declared: Iterable[SamplingOption],
                       names: Iterable[str] | None = None) -> None:
    """Check the values of the flags ``add_option_flags`` made; a refused value ends the
    command with ``parser.error`` naming the flag (exit status 2)."""
    table = {o.name: o for o in declared}
    for name in (names if names is not None else table):
        try:
            table[name].validate(getattr(args, name, None), table[name].cli_flag)
        except ValueError as err:
            parser.error(str(err))
