"""The engine: DiffusionModule (Lightning), EMA, checkpoints, and ``fit``.

``diffplat.training.fit(config, *overrides)`` trains as ``diffplat fit -c config`` does and
returns the checkpoint path; failures raise.
"""

from __future__ import annotations


def fit(config, *overrides, ckpt_path=None):
    from diffplat.training.lightning import fit as _fit

    return _fit(config, *overrides, ckpt_path=ckpt_path)


__all__ = ["fit"]
