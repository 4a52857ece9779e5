"""A permutation-equivariant point transformer with time and class conditioning.

Every point is a token (as in Point-E, Nichol et al. 2022, sec. 3.1); the blocks are DiT
blocks (Peebles & Xie 2023, sec. 3.2: adaLN-Zero modulation of layer norms by the noise
level and class, residual gates initialised at zero). Attention is either full self-attention
over the N points (O(N^2), for a GPU) or through ``inducing`` learned points (the ISAB of Set
Transformer, Lee et al. 2019, eq. 9: H = Attn(I, X), out = Attn(X, H); O(N M)). No operation
mixes points except attention, which is permutation-equivariant, so permuting the input
points permutes the output (tests/test_shapes_model.py checks it in float64).

Classifier-free guidance (Ho & Salimans 2022): label -1 is the null class. During training
each label is replaced by the null class with probability ``class_dropout`` (DiT's
LabelEmbedder), so one network is conditional and unconditional.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffplat.backbone import Backbone


def timestep_embedding(c_noise: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of the noise level (Vaswani et al. 2017, sec. 3.5). [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=c_noise.device,
                                                       dtype=c_noise.dtype) / half)
    # c_noise = log(sigma / alpha) / 4 lies in about [-5, 5]; scale it to a phase range
    args = 250.0 * c_noise[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(
            dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        B, N, D = x.shape
        h = self.heads
        q = self.q(x).view(B, N, h, D // h).transpose(1, 2)
        k, v = self.kv(context).view(B, context.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(B, N, D))


class PointBlock(nn.Module):
    """adaLN-Zero transformer block over points.

    Args:
        dim: token width; heads: attention heads; mlp_ratio: MLP width / dim;
        inducing: number of inducing points (0 = full self-attention).

    Shapes:
        x [B, N, dim], c [B, dim] -> [B, N, dim].
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, inducing: int = 0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.inducing = inducing
        if inducing:
            self.points = nn.Parameter(torch.randn(inducing, dim) * dim ** -0.5)
            self.pool = _Attention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c))[:, None].chunk(
            6, -1)
        h = self.norm1(x) * (1 + scale1) + shift1
        if self.inducing:
            ind = self.points[None].expand(x.shape[0], -1, -1).to(h.dtype)
            context = self.pool(ind, h)  # H = Attn(I, X): a summary of the set
        else:
            context = h
        x = x + gate1 * self.attn(h, context)
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class PointTransformer(Backbone):
    """Denoiser backbone for point clouds, called as ``backbone(c_in * x_t, c_noise,
    labels=...)``.

    Args:
        hidden: token width.
        depth: number of blocks.
        heads: attention heads.
        mlp_ratio: MLP width / hidden.
        inducing: 0 for full self-attention, else the number of inducing points per block.
        num_classes: number of classes for conditioning (0 = unconditional only); label -1
            (or any label when ``num_classes`` is 0) selects the learned null class.
        class_dropout: probability of replacing a label by the null class in training.
        fourier_features: sinusoidal features of the coordinates at 1, 2, 4, ...
            (NeRF's positional encoding, Mildenhall et al. 2020, eq. 4), 0 = raw xyz only.

    Shapes:
        x [B, N, 3], c_noise [B], labels [B] (int, -1 = null) -> [B, N, 3].
    """

    def __init__(self, hidden: int = 256, depth: int = 8, heads: int = 4,
                 mlp_ratio: float = 4.0, inducing: int = 0, num_classes: int = 0,
                 class_dropout: float = 0.1, fourier_features: int = 4):
        super().__init__()
        self.num_classes, self.class_dropout = num_classes, class_dropout
        self.fourier = fourier_features
        in_dim = 3 * (1 + 2 * fourier_features)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(),
                                   nn.Linear(hidden, hidden))
        self.time = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.classes = nn.Embedding(num_classes + 1, hidden)  # index num_classes = null
        self.blocks = nn.ModuleList(PointBlock(hidden, heads, mlp_ratio, inducing)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_mod = nn.Linear(hidden, 2 * hidden)
        self.head = nn.Linear(hidden, 3)
        for layer in (self.final_mod, self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _features(self, x: Tensor) -> Tensor:
        if not self.fourier:
            return x
        freqs = 2.0 ** torch.arange(self.fourier, device=x.device, dtype=x.dtype)
        ang = x[..., None] * freqs                                    # [B, N, 3, F]
        return torch.cat([x, ang.sin().flatten(-2), ang.cos().flatten(-2)], -1)

    def _labels(self, labels: Tensor | None, batch: int, device) -> Tensor:
        null = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        if labels is None or self.num_classes == 0:
            return null
        labels = labels.long()
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise ValueError(f"label {int(labels.max())} out of range for num_classes="
                             f"{self.num_classes} (set the backbone's num_classes to the "
                             "number of classes in the data)")
        labels = torch.where(labels < 0, null, labels)
        if self.training and self.class_dropout > 0:
            drop = torch.rand(batch, device=device) < self.class_dropout
            labels = torch.where(drop, null, labels)
        return labels

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"expected points of shape [B, N, 3], got {tuple(x.shape)}")
        B = x.shape[0]
        c_noise = c_noise.to(x.dtype).expand(B) if c_noise.ndim == 0 else c_noise.to(x.dtype)
        c = self.time(timestep_embedding(c_noise, self.embed[-1].out_features))
        c = c + self.classes(self._labels(labels, B, x.device))
        h = self.embed(self._features(x))
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_mod(F.silu(c))[:, None].chunk(2, -1)
        return self.head(self.norm(h) * (1 + scale) + shift)
