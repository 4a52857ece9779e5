"""A small MLP denoiser backbone for vectors."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffplat.backbone import Backbone


class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise level (Tancik et al. 2020; Song et al. 2021).

    Shapes:
        c_noise [B] -> [B, dim].
    """

    def __init__(self, dim: int, scale: float = 4.0, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=gen) * scale)

    def forward(self, c_noise: Tensor) -> Tensor:
        arg = 2 * math.pi * c_noise[:, None].to(self.freqs.dtype) * self.freqs
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class MLPBackbone(Backbone):
    """Residual MLP conditioned on the noise level.

    Args:
        dim: data dimension d.
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        emb_dim: size of the noise-level embedding.

    Shapes:
        x [B, d], c_noise [B] -> [B, d].
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, emb_dim: int = 64):
        super().__init__()
        self.embed = nn.Sequential(FourierEmbedding(emb_dim), nn.Linear(emb_dim, hidden),
                                   nn.SiLU())
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(),
                          nn.Linear(hidden, hidden)) for _ in range(depth))
        self.cond = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.embed(c_noise).to(x.dtype)
        h = self.inp(x)
        for block, cond in zip(self.blocks, self.cond):
            h = h + block(h + cond(emb))
        return self.out(h)
