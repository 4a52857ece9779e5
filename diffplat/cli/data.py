"""``diffplat data prepare|info DOMAIN``: build and describe datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffplat.cli.domains import domain_class, prepare_options, registry
from diffplat.cli.sample import parse_options


def main(argv: list[str]) -> int:
    names = registry.names()
    epilog = "prepare options by domain:\n" + "\n".join(
        f"  {n}: {', '.join(prepare_options(n))}" for n in names)
    p = argparse.ArgumentParser(
        prog="diffplat data", description="Build (prepare) or describe (info) a dataset.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["prepare", "info"])
    p.add_argument("domain", help=f"one of: {', '.join(names)}")
    p.add_argument("path", nargs="?", help="for info: the prepared file or folder")
    p.add_argument("--out", help="for prepare: output folder (default: the domain's "
                                 "default_data_dir, e.g. data/toy)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="a prepare option (see below), repeatable")
    args = p.parse_args(argv)
    cls = domain_class(args.domain)
    if args.action == "prepare":
        out = Path(args.out or cls.default_data_dir)
        paths = cls.prepare(out, **parse_options(args.option))
        print("wrote " + ", ".join(str(x) for x in paths))
        return 0
    info = cls.describe(Path(args.path or cls.default_data_dir))
    print(json.dumps(info, indent=2))
    return 0
