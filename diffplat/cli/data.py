"""``diffplat data prepare|info DOMAIN``: build and describe datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffplat import plugins
from diffplat.cli.domains import domain_class, prepare_options
from diffplat.cli.options import given_options, parse_options, refuse_unused, usage_error

#: Which flag goes with which action (the positional PATH goes with info only).
TABLE = {"out": ("prepare",), "option": ("prepare",)}
MODES = {"prepare": "`data prepare`", "info": "`data info`"}


def _epilog() -> str:
    """What each domain prepares and its options (imports every domain: --help only)."""
    lines = ["domains and their prepare options (-o KEY=VALUE):"]
    for plugin in plugins.plugins().values():
        names = " / ".join([plugin.name, *plugin.aliases])
        try:
            opts = ", ".join(prepare_options(plugin.name)) or "(none)"
        except Exception as err:  # noqa: BLE001 - a domain whose libraries are missing
            opts = f"(cannot load: {type(err).__name__})"
        lines.append(f"  {names}: {plugin.prepare_help or plugin.summary}")
        lines.append(f"      {opts}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    names = plugins.names()
    wants_help = any(a in ("-h", "--help") for a in argv)
    p = argparse.ArgumentParser(
        prog="diffplat data", description="Build (prepare) or describe (info) a dataset.",
        epilog=_epilog() if wants_help else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["prepare", "info"])
    p.add_argument("domain", help=f"one of: {', '.join(names)}")
    p.add_argument("path", nargs="?", help="for info: the prepared file or folder "
                                           "(molecules: also an SDF of your own)")
    p.add_argument("--out", help="for prepare: output folder (default: the domain's "
                                 "default_data_dir, e.g. data/toy)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="a prepare option (see below), repeatable")
    args = p.parse_args(argv)
    bad = refuse_unused(given_options(p, argv), args.action, TABLE, MODES)
    if bad or (args.path is not None and args.action == "prepare"):
        return usage_error(p.prog, bad or f"a path ({args.path}) does not apply to "
                                          "`data prepare`; it goes with `data info` (--out "
                                          "names where prepare writes)")
    cls = domain_class(args.domain)
    if args.action == "prepare":
        out = Path(args.out or cls.default_data_dir)
        options = parse_options(args.option)
        valid = [o.split("=")[0] for o in prepare_options(args.domain)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown prepare option(s) {', '.join(unknown)} for "
                             f"{args.domain!r}; valid: {', '.join(valid) or 'none'}")
        paths = cls.prepare(out, **options)
        print("wrote " + ", ".join(str(x) for x in paths))
        return 0
    info = cls.describe(Path(args.path or cls.default_data_dir))
    print(json.dumps(info, indent=2))
    return 0
