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

    def mix(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """The forward process ``x_t = alpha x0 + sigma eps`` with per-sample coefficients
        [B] broadcast to x's layout (Ho et al. 2020, eq. 4; Kingma et al. 2021, eq. 1)."""
        return self.expand(alpha, x0) * x0 + self.expand(sigma, x0) * eps

    def dof(self, x: Tensor) -> Tensor:
        """Degrees of freedom per sample [B] (numbers of free Gaussian dimensions)."""
        raise NotImplementedError

    def mean(self, values: Tensor) -> Tensor:
        """Per-sample mean over the degrees of freedom: [B]."""
        return self.sum(values) / self.dof(values).to(values.dtype)

    def sample_rows(self, x: Tensor) -> list[Tensor]:
        """The first-axis indices of every sample's elements, in order (samples with the
        same number of rows have the same shape and can swap their noise)."""
        return [torch.tensor([b], device=x.device) for b in range(self.batch_size(x))]


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


def com(x_pos: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Per-graph centre of mass (unweighted mean) of node positions.

    Args:
        x_pos: node positions.
        batch: graph index of every node, in [0, num_graphs) (sorted or not).
        num_graphs: number of graphs B (graphs without nodes get a zero centre).

    Shapes:
        x_pos [N, D], batch [N] -> [B, D].
    """
    total = x_pos.new_zeros((num_graphs, x_pos.shape[1])).index_add_(0, batch, x_pos)
    counts = torch.bincount(batch, minlength=num_graphs).clamp_(min=1)
    return total / counts.to(x_pos.dtype)[:, None]


class ZeroCoMGaussian(NoiseSpace):
    """Gaussian noise on a ragged batch of point sets, positions free of centre of mass.

    Data of B graphs lie in one tensor x of shape [N, pos_dims + F] whose row i belongs to
    graph ``batch[i]``. The first ``pos_dims`` columns are positions: their noise lives in the
    subspace where every graph's mean position is zero (the E(n)-invariant prior of EDM,
    Hoogeboom et al. 2022, sec. 3). The other F columns (atom types, charges...) get plain
    i.i.d. Gaussian noise. A graph of n nodes therefore has (n - 1) * pos_dims + n * F
    degrees of freedom, which ``dof`` reports so that ``diffplat.losses.vlb`` counts them.

    Args:
        batch: graph index of every node, values in [0, num_graphs); need not be sorted.
        num_graphs: number of graphs B in the batch.
        pos_dims: number of leading position columns (3 for molecules).

    Shapes:
        x: [N, pos_dims + F]; coefficients [B] (expanded to [N, 1]); reductions [B].
    """

    def __init__(self, batch: Tensor, num_graphs: int, pos_dims: int = 3):
        if batch.ndim != 1:
            raise ValueError(f"batch must have shape [N], got {tuple(batch.shape)}")
        self.batch = batch.long()
        self.num_graphs = int(num_graphs)
        self.pos_dims = int(pos_dims)
        self.counts = torch.bincount(self.batch, minlength=self.num_graphs)
        if self.counts.numel() != self.num_graphs:
            raise ValueError(f"batch has graph indices >= num_graphs={self.num_graphs}")

    def _check(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[0] != self.batch.shape[0] or x.shape[1] < self.pos_dims:
            raise ValueError(
                f"expected x of shape [{self.batch.shape[0]}, >={self.pos_dims}] for this "
                f"batch, got {tuple(x.shape)}")

    def batch_size(self, x: Tensor) -> int:
        return self.num_graphs

    def sample_rows(self, x: Tensor) -> list[Tensor]:
        order = torch.argsort(self.batch, stable=True)
        return list(torch.split(order, self.counts.tolist()))

    def sample_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self._check(x)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return self.project(eps)

    def project(self, x: Tensor) -> Tensor:
        """Subtract each graph's mean from the position columns; features pass through."""
        self._check(x)
        pos = x[:, :self.pos_dims]
        pos = pos - com(pos, self.batch, self.num_graphs)[self.batch]
        return torch.cat([pos, x[:, self.pos_dims:]], dim=1)

    def expand(self, coef: Tensor, x: Tensor) -> Tensor:
        coef = torch.as_tensor(coef, dtype=x.dtype, device=x.device)
        if coef.ndim == 0:
            return coef
        return coef[self.batch][:, None]

    def sum(self, values: Tensor) -> Tensor:
        rows = values.reshape(values.shape[0], -1).sum(1)
        return rows.new_zeros(self.num_graphs).index_add_(0, self.batch, rows)

    def dof(self, x: Tensor) -> Tensor:
        features = x.shape[1] - self.pos_dims
        n = self.counts.to(x.device)
        return (n - 1).clamp(min=0) * self.pos_dims + n * features
