"""diffplat: one diffusion core for audio, molecules and point clouds.

The submodules load on first use (``diffplat.samplers``, ``diffplat.schedules``, ...), so
the command line starts without importing torch for ``--help``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
_SUBMODULES = ("schedules", "targets", "losses", "noise", "samplers", "guidance")
__all__ = [*_SUBMODULES, "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"diffplat.{name}")
    raise AttributeError(f"module 'diffplat' has no attribute {name!r}")
