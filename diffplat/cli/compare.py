"""``diffplat compare``: reserved for the cross-domain comparison (not implemented yet)."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="diffplat compare",
        description="Reserved: the grid comparison of schedules and samplers across domains "
                    "is not implemented in this version. It exits with status 2.")
    parser.parse_args(argv)
    print("diffplat compare: not implemented in this version", flush=True)
    return 2
