"""Noise spaces: where Gaussian noise lives and how per-sample scalars meet the data.

Samplers and losses never assume a tensor rank. They ask the NoiseSpace to draw noise, to
project onto the space (e.g. zero centre of mass for molecules), to broadcast a per-sample
coefficient of shape [B] against the data, and to reduce per-element values to one number
per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor


class NoiseSpace:
    """Interface of a noise space. The dense Gaussian below is the default."""

    def batch_size(self, x: Tensor) -> int:
        raise NotImplementedError

    def sample_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Standard Gaussian noise in this space with x's shape, dtype and device."""
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        """Project x onto the space (identity for the dense Gaussian)."""
        return x

    def expand(self, coef: Tensor, x: Tensor) -> Tensor:
        """Broadcast a per-sample coefficient [B] so that ``coef * x`` works."""
        raise NotImplementedError

    def sum(self, values: Tensor) -> Tensor:
        """Per-sample sum over all non-batch elements: [B]."""
        raise NotImplementedError

    def dof(self, x: Tensor) -> Tensor:
        """Degrees of freedom per sample [B] (numbers of free Gaussian dimensions)."""
        raise NotImplementedError

    def mean(self, values: Tensor) -> Tensor:
        """Per-sample mean over the degrees of freedom: [B]."""
        return self.sum(values) / self.dof(values).to(values.dtype)


class GaussianNoise(NoiseSpace):
    """Dense i.i.d. Gaussian noise on tensors of shape [B, ...].

    Shapes:
        x: [B, *feature_shape]; coefficients [B]; reductions [B].
    """

    def batch_size(self, x: Tensor) -> int:
        return x.shape[0]

    def sample_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

    def expand(self, coef: Tensor, x: Tensor) -> Tensor:
        coef = torch.as_tensor(coef, dtype=x.dtype, device=x.device)
        if coef.ndim == 0:
            return coef
        return coef.reshape(coef.shape[0], *([1] * (x.ndim - 1)))

    def sum(self, values: Tensor) -> Tensor:
        return values.reshape(values.shape[0], -1).sum(1)

    def dof(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), x[0].numel(), device=x.device)
