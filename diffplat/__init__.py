"""diffplat: one diffusion core for audio, molecules and point clouds.

    import diffplat
    model = diffplat.load("runs/qm9-tiny/checkpoints/last.ckpt")  # or an export, a name
    molecules = model.sample(100, steps=50)

The submodules load on first use (``diffplat.samplers``, ``diffplat.schedules``, ...), so
the command line starts without importing torch for ``--help``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
_SUBMODULES = ("schedules", "targets", "losses", "noise", "samplers", "guidance", "sampling",
               "models")
__all__ = [*_SUBMODULES, "load", "Pipeline", "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"diffplat.{name}")
    if name in ("load", "Pipeline"):
        return getattr(importlib.import_module("diffplat.api"), name)
    raise AttributeError(f"module 'diffplat' has no attribute {name!r}")
