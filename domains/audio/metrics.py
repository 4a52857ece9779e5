"""Sample-quality metrics of DiffWave (Kong et al. 2021, Sec. 5.2 and App. C), computed from a
classifier's softmax outputs and penultimate-layer features, plus a multi-resolution STFT
distance for paired outputs.

* FID (Heusel et al. 2017): Frechet distance of Gaussians fitted to the features of the
  generated and the training clips, ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
* IS (Salimans et al. 2016): ``exp E_x KL(p(y|x) || p(y))`` with ``p(y)`` the mean
  prediction over the generated set; between 1 and the number of classes.
* mIS, modified IS (Gurumurthy et al. 2017): ``exp E_{x_i, x_j} KL(p(y|x_i) || p(y|x_j))``
  over all pairs of generated clips: it also rewards diversity *within* a class.
* AM score (Zhou et al. 2018): ``KL(p_train(y) || p(y)) + E_x H(p(y|x))``, with
  ``p_train(y)`` the mean prediction over the training set; lower is better.
* NDB (Richardson & Weiss 2018): the training features are clustered by k-means into K = 50
  bins; a bin is "statistically different" when a two-proportion z-test between the share of
  training and of generated clips in it rejects equality at level 0.05. Reported as NDB and
  NDB/K (DiffWave's column).

All sums run in float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

EPS = 1e-12


def _p(probs: Tensor) -> Tensor:
    return torch.as_tensor(probs, dtype=torch.float64).clamp_min(EPS)


def inception_score(probs: Tensor) -> float:
    """IS of class probabilities [N, C]."""
    p = _p(probs)
    marginal = p.mean(0, keepdim=True)
    return math.exp(float((p * (p.log() - marginal.log())).sum(1).mean()))


def modified_inception_score(probs: Tensor, chunk: int = 1024) -> float:
    """mIS of class probabilities [N, C] (all N^2 ordered pairs, the pairs i = j included,
    whose KL is 0)."""
    p = _p(probs)
    logp = p.log()
    # E_ij KL(p_i || p_j) = E_i sum_c p_ic log p_ic - E_ij sum_c p_ic log p_jc
    self_term = (p * logp).sum(1).mean()
    cross = 0.0
    for s in range(0, len(p), chunk):
        cross += float((p[s:s + chunk] @ logp.T).sum())
    return math.exp(float(self_term) - cross / len(p) ** 2)


def am_score(probs: Tensor, train_probs: Tensor) -> float:
    """AM score of class probabilities [N, C] given the training predictions [M, C]."""
    p, q = _p(probs), _p(train_probs)
    marg, train_marg = p.mean(0), q.mean(0)
    kl = float((train_marg * (train_marg.log() - marg.log())).sum())
    entropy = float(-(p * p.log()).sum(1).mean())
    return kl + entropy


def gaussian_stats(features: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64."""
    x = torch.as_tensor(features, dtype=torch.float64).cpu().numpy()
    if len(x) < 2:
        raise ValueError(f"FID needs at least 2 samples, got {len(x)}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
    """Frechet distance of N(mu1, cov1) and N(mu2, cov2)."""
    from scipy import linalg

    with warnings.catch_warnings():  # a singular product is handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():  # regularise as pytorch-fid does
            offset = np.eye(len(cov1)) * 1e-6
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def fid(features: Tensor, ref_features: Tensor) -> float:
    """FID between two feature sets [N, D] and [M, D]."""
    return frechet_distance(*gaussian_stats(features), *gaussian_stats(ref_features))


def kmeans(x: Tensor, k: int, iters: int = 50, seed: int = 0) -> Tensor:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007).

    Shapes: x [N, D] -> centroids [k, D] (float64)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if len(x) < k:
        raise ValueError(f"k-means with K={k} needs at least {k} points, got {len(x)}")
    gen = torch.Generator().manual_seed(seed)
    centers = [x[torch.randint(len(x), (1,), generator=gen)].squeeze(0)]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        idx = torch.multinomial(d2 / d2.sum(), 1, generator=gen) if d2.sum() > 0 else \
            torch.randint(len(x), (1,), generator=gen)
        centers.append(x[idx].squeeze(0))
        d2 = torch.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
    c = torch.stack(centers)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        new = torch.stack([x[assign == j].mean(0) if (assign == j).any() else c[j]
                           for j in range(k)])
        if torch.allclose(new, c):
            break
        c = new
    return c


def ndb(features: Tensor, ref_features: Tensor, k: int = 50, alpha: float = 0.05,
        seed: int = 0, centers: Tensor | None = None) -> tuple[int, float]:
    """Number of statistically different bins and NDB/K of ``features`` against the bins
    of ``ref_features`` (k-means centroids, or ``centers`` when given)."""
    from scipy.stats import norm

    ref = torch.as_tensor(ref_features, dtype=torch.float64)
    gen = torch.as_tensor(features, dtype=torch.float64)
    if centers is None:
        centers = kmeans(ref, k, seed=seed)
    k = len(centers)
    n1, n2 = len(ref), len(gen)
    p1 = torch.bincount(torch.cdist(ref, centers).argmin(1), minlength=k).double() / n1
    p2 = torch.bincount(torch.cdist(gen, centers).argmin(1), minlength=k).double() / n2
    pooled = (n1 * p1 + n2 * p2) / (n1 + n2)
    se = torch.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = torch.where(se > 0, (p1 - p2) / se.clamp_min(EPS), torch.zeros_like(se))
    different = int((z.abs() > norm.ppf(1 - alpha / 2)).sum())
    return different, different / k


def multi_resolution_stft(x: Tensor, y: Tensor,
                          resolutions: tuple[tuple[int, int, int], ...] = (
                              (512, 128, 512), (1024, 256, 1024), (2048, 512, 2048)),
                          ) -> Tensor:
    """Multi-resolution STFT distance of Parallel WaveGAN (Yamamoto et al. 2020, Eq. 4-6):
    per resolution (FFT size, hop, window) the spectral convergence
    ``||S_x| - |S_y||_F / ||S_y||_F`` plus the mean absolute log-magnitude difference,
    averaged over the resolutions.

    Shapes: x, y [B, T] or [B, 1, T] (same shape) -> [B].
    """
    if x.shape != y.shape:
        raise ValueError(f"STFT distance needs paired clips of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for n_fft, hop, win in resolutions:
        window = torch.hann_window(win, dtype=torch.float64, device=x.device)
        sx, sy = (torch.stft(v, n_fft, hop, win, window, return_complex=True).abs()
                  .clamp_min(1e-7) for v in (x, y))
        sc = torch.linalg.norm((sy - sx).flatten(1), dim=1) / torch.linalg.norm(
            sy.flatten(1), dim=1).clamp_min(1e-7)
        mag = (sy.log() - sx.log()).abs().flatten(1).mean(1)
        total += sc + mag
    return total / len(resolutions)
