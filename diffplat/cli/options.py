"""Command-line options shared by the commands: ``KEY=VALUE`` pairs (``-o``, ``--prior``),
``--device``, and the rule that a flag which does not apply to a command's mode is refused.

Each command describes its modes in one table, ``{flag dest: modes it applies to}``, and
calls :func:`refuse_unused` with the flags given on its command line
(:func:`given_options`) and the mode they select.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def parse_options(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"option {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, str]:
    """``dest -> option string`` for every option that ``argv`` gives (a default value
    typed out counts as given; abbreviations are resolved as argparse does)."""
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    saved = [(a, a.default) for a in actions]
    try:
        for a in actions:
            a.default = argparse.SUPPRESS
        ns, _ = parser.parse_known_args(argv)
    finally:
        for a, default in saved:
            a.default = default
    given = vars(ns)
    return {a.dest: max(a.option_strings, key=len) for a in actions if a.dest in given}


def refuse_unused(given: dict[str, str], mode: str, table: dict[str, tuple[str, ...]],
                  modes: dict[str, str]) -> str | None:
    """The one-line refusal of the first given flag that ``table`` does not allow in
    ``mode`` (``modes`` describes each mode in words), or None."""
    for dest, flag in given.items():
        allowed = table[dest]
        if mode not in allowed:
            goes = " or ".join(modes[m] for m in allowed)
            return f"{flag} does not apply to {modes[mode]}; it goes with {goes}"
    return None


def usage_error(prog: str, message: str) -> int:
    """A bad command line in one line on stderr; exit status 2 (as argparse's)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def devices() -> list[str]:
    """The devices this machine can sample on."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def resolve_device(name: str | None, flag: str = "--device") -> str:
    """``--device``: None -> cuda when available, else cpu; anything this machine does not
    have -> ValueError naming the option and the valid devices."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    valid = devices()
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    ok = dev is not None and (
        (dev.type == "cpu") or (dev.type == "mps" and "mps" in valid)
        or (dev.type == "cuda" and "cuda" in valid
            and (dev.index is None or dev.index < torch.cuda.device_count())))
    if not ok:
        raise ValueError(f"{flag} {name!r}: no such device on this machine; valid: "
                         f"{', '.join(valid)}")
    return str(dev)
