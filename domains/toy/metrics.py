"""Distances from a sample set to the exact Gaussian mixture.

* ``mmd2_to_mixture``: squared MMD with a Gaussian kernel, the mixture's side in closed
  form (Gaussian integrals of a Gaussian kernel), the sample side as an unbiased U-statistic,
  so its expectation is exactly 0 when the samples come from the mixture.
* ``w2_to_mixture``: exact 2-Wasserstein distance between the samples and as many fresh
  mixture samples (optimal assignment). Its floor for exact samples is reported alongside
  (``w2_floor``) since finite samples never reach 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from domains.toy.gmm import GaussianMixture


def _gauss_expect(diff2: Tensor, var: Tensor, bw2: float) -> Tensor:
    """E k over Gaussians: prod_d sqrt(l^2 / (l^2 + var)) exp(-diff^2 / (2 (l^2 + var)))."""
    tot = bw2 + var
    return torch.exp((0.5 * torch.log(bw2 / tot) - diff2 / (2 * tot)).sum(-1))


def mmd2_to_mixture(x: Tensor, mix: GaussianMixture, bandwidth: float = 1.0) -> float:
    """Unbiased squared MMD between samples x [n, d] and the mixture."""
    x = x.detach().double().cpu()
    n = x.shape[0]
    bw2 = bandwidth**2
    d2 = torch.cdist(x, x).pow(2)
    kxx = torch.exp(-d2 / (2 * bw2))
    term_xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    diff2 = (x[:, None, :] - mix.means[None]) ** 2                      # [n, K, d]
    kxp = _gauss_expect(diff2, mix.variances[None], bw2)                 # [n, K]
    term_xp = (kxp * mix.weights).sum(1).mean()
    mdiff2 = (mix.means[:, None] - mix.means[None]) ** 2                 # [K, K, d]
    kpp = _gauss_expect(mdiff2, mix.variances[:, None] + mix.variances[None], bw2)
    term_pp = mix.weights @ kpp @ mix.weights
    return float(term_xx - 2 * term_xp + term_pp)


def w2(x: Tensor, y: Tensor) -> float:
    """Exact W2 between two equal-size point sets (Hungarian assignment)."""
    a, b = x.detach().double().cpu().numpy(), y.detach().double().cpu().numpy()
    cost = ((a[:, None, :] - b[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return math.sqrt(float(np.mean(cost[rows, cols])))


def w2_to_mixture(x: Tensor, mix: GaussianMixture, seed: int = 12345) -> dict[str, float]:
    """W2 to fresh mixture samples, and the same for a second exact set (the floor)."""
    gen = torch.Generator().manual_seed(seed)
    ref = mix.sample(x.shape[0], gen)
    floor = w2(mix.sample(x.shape[0], gen), ref)
    return {"w2": w2(x, ref), "w2_floor": floor}
