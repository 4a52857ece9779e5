"""``diffplat conformers``: conformers of given molecules from a model or RDKit's ETKDG.

The implementation lives in the molecules domain (it needs RDKit); it is imported here only
when the command runs, so the core keeps no chemistry import.
"""

from __future__ import annotations

import importlib

IMPLEMENTATION = "domains.molecules.conformers.cli"


def main(argv: list[str]) -> int:
    return importlib.import_module(IMPLEMENTATION).conformers_main(argv)


def evaluate(argv: list[str]) -> int:
    """``diffplat evaluate conformers ...``."""
    return importlib.import_module(IMPLEMENTATION).evaluate_main(argv)
