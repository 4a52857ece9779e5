"""Learning-rate schedule and gradient clipping."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``
    (constant after it; ``total <= 0`` means no decay)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class AdaptiveClipper:
    """Clip at 1.5 x mean + 2 x std of the recent gradient norms (Hoogeboom et al. 2022,
    EDM-molecules' ``gradient_clipping``), after a warm-up at a fixed maximum.

    The queue is a tensor so that it lives in checkpoints (exact resume).
    """

    def __init__(self, size: int = 50, initial: float = 3000.0):
        self.size, self.initial = size, initial

    def max_norm(self, queue: torch.Tensor, filled: int) -> float:
        if filled < 2:
            return self.initial
        q = queue[: min(filled, self.size)]
        return float(1.5 * q.mean() + 2 * q.std())
