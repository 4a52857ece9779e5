"""A 1D U-Net on raw waveforms.

The structure of the image U-Nets of DDPM (Ho et al. 2020, App. B) and ADM (Dhariwal &
Nichol 2021), in one dimension: residual blocks modulated by the noise level (scale and
shift, ADM's "AdaGN"), strided convolutions down, nearest-neighbour upsampling plus a
convolution up (no checkerboard artefacts, Odena et al. 2016), skip connections by
concatenation, and multi-head self-attention only at the coarse levels where the sequence is
short. Waveform U-Nets of this kind (e.g. the 1D U-Nets of audio-diffusion-pytorch,
Schneider 2023) downsample by large factors (4 to 5 per level) so that a second of 16 kHz
audio reaches a few dozen frames at the bottom.

The noise level enters as sinusoidal Fourier features of ``c_noise`` (Vaswani et al. 2017;
the same embedding DDPM uses for t), and the class, for conditional models, as a learned
embedding with one extra "null" row (index ``num_classes``) for classifier-free guidance
(Ho & Salimans 2022): training drops labels to the null class, sampling mixes the two.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffplat.backbone import Backbone


def _groups(channels: int) -> int:
    return math.gcd(channels, 8) or 1


def fourier_features(c_noise: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of the (scaled log-SNR) noise level. Shapes: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device,
                                                            dtype=torch.float32) / half)
    # c_noise = log(sigma/alpha)/4 lies in about [-5, 5]; scale it up so that the highest
    # frequencies resolve small changes of the noise level
    args = 1000.0 * c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the embedding as per-channel scale and shift.

    Shapes: x [B, C_in, T], emb [B, E] -> [B, C_out, T].
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, kernel: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over time with a residual connection.

    Shapes: [B, C, T] -> [B, C, T].
    """

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, t).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                           v.transpose(-1, -2))
        return x + self.out(h.transpose(-1, -2).reshape(b, c, t))


class UNet1D(Backbone):
    """Waveform U-Net called as ``backbone(c_in * x_t, c_noise, labels=...)``.

    Args:
        in_channels: audio channels (1 = mono).
        channels: feature channels per level, finest first, e.g. [32, 64, 128, 256].
        factors: down-sampling factor into each level after the first (len(channels) - 1
            entries), e.g. [4, 4, 4]; the input is zero-padded to a multiple of their product
            and the output cropped back.
        blocks: residual blocks per level (the decoder has one more, as in ADM).
        attention_levels: level indices (0 = finest) with self-attention after each block;
            the bottleneck always has one.
        heads: attention heads.
        emb_dim: width of the noise-level (and class) embedding.
        num_classes: 0 for an unconditional model; otherwise the number of classes, and
            ``labels`` (int64 [B], with ``num_classes`` meaning "no class") is required.
        kernel: convolution kernel size.
        stem_kernel: kernel of the first and last convolution.
        dropout: dropout inside the residual blocks.

    Shapes:
        x: [B, in_channels, T]; c_noise: [B]; labels: [B] -> [B, in_channels, T].
    """

    def __init__(self, in_channels: int = 1, channels: list[int] = (32, 64, 128, 256),
                 factors: list[int] = (4, 4, 4), blocks: int = 2,
                 attention_levels: list[int] = (3,), heads: int = 4, emb_dim: int = 256,
                 num_classes: int = 0, kernel: int = 3, stem_kernel: int = 7,
                 dropout: float = 0.0):
        super().__init__()
        channels, factors = list(channels), list(factors)
        if len(factors) != len(channels) - 1:
            raise ValueError(f"UNet1D: {len(channels)} levels need {len(channels) - 1} "
                             f"factors, got {factors}")
        bad = [a for a in attention_levels if not 0 <= a < len(channels)]
        if bad:
            raise ValueError(f"UNet1D: attention_levels {bad} outside 0..{len(channels) - 1}")
        self.factors, self.num_classes, self.emb_dim = factors, num_classes, emb_dim
        self.hop = math.prod(factors)
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.stem = nn.Conv1d(in_channels, channels[0], stem_kernel, padding=stem_kernel // 2)

        def block(level: int, c_in: int, c_out: int) -> _Block:
            return _Block(ResBlock(c_in, c_out, emb_dim, kernel, dropout),
                          Attention(c_out, heads) if level in attention_levels else None)

        self.down = nn.ModuleList()
        skips, c = [channels[0]], channels[0]
        for level, width in enumerate(channels):
            if level > 0:
                f = factors[level - 1]
                k = 2 * f - f % 2  # with padding (k - f) / 2 the length divides exactly by f
                self.down.append(nn.Conv1d(c, c, k, stride=f, padding=(k - f) // 2))
                skips.append(c)
            for _ in range(blocks):
                self.down.append(block(level, c, width))
                c = width
                skips.append(c)
        self.mid = nn.ModuleList([_Block(ResBlock(c, c, emb_dim, kernel, dropout),
                                         Attention(c, heads)),
                                  _Block(ResBlock(c, c, emb_dim, kernel, dropout))])
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels))):
            width = channels[level]
            for _ in range(blocks + 1):
                self.up.append(block(level, c + skips.pop(), width))
                c = width
            if level > 0:
                self.up.append(_Upsample(c, factors[level - 1], kernel))
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(),
                                 nn.Conv1d(c, in_channels, stem_kernel, padding=stem_kernel // 2))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def embed(self, c_noise: Tensor, labels: Tensor | None) -> Tensor:
        emb = self.time_mlp(fourier_features(c_noise, self.emb_dim))
        if self.class_emb is not None:
            if labels is None:
                raise ValueError("this UNet1D is class-conditional (num_classes="
                                 f"{self.num_classes}) and needs labels; the domain must "
                                 "be conditional too")
            emb = emb + self.class_emb(labels.long())
        elif labels is not None:
            raise ValueError("labels given to an unconditional UNet1D: set its num_classes "
                             "to the number of classes")
        return emb

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        length = x.shape[-1]
        pad = (-length) % self.hop
        h = F.pad(x, (0, pad)) if pad else x
        emb = self.embed(c_noise.expand(x.shape[0]), labels)
        h = self.stem(h)
        hs = [h]
        for layer in self.down:  # every block and every downsampling leaves a skip
            h = layer(h, emb) if isinstance(layer, _Block) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, _Block):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)[..., :length]


class _Block(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, res: ResBlock, attn: Attention | None = None):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class _Upsample(nn.Module):
    def __init__(self, channels: int, factor: int, kernel: int):
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.factor, mode="nearest"))
