"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """A shadow copy of a module whose weights track an exponential moving average.

    Args:
        model: the module to track.
        decay: the EMA decay; the effective decay warms up as min(decay, (1 + n) / (10 + n))
            after n updates (the schedule of TensorFlow's ExponentialMovingAverage).

    The shadow lives in this module's state_dict, so checkpoints carry it and resuming
    restores it exactly.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        n = float(self.num_updates)
        d = min(self.decay, (1 + n) / (10 + n))
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach().to(s.dtype), 1 - d)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)

    def forward(self, *args, **kwargs):
        return self.shadow(*args, **kwargs)

