"""Label-free audio metrics: no classifier, no pretrained weights, any sounds.

Each clip is summarised by the statistics of its log-mel spectrogram: per mel band, the mean
and the standard deviation over time of the power in dB (``log_mel_stats``, 2 x 32 numbers).
Two sets of clips (the samples and the reference split) are then compared as sets:

* ``fd_mel``: the Frechet distance of Gaussians fitted to the two feature sets,
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al. 2017; with these features
  instead of a classifier's, the construction of the Frechet Audio Distance, Kilgour et
  al. 2019, without its VGGish embedding). In dB^2; 0 for identical statistics.
* ``mmd_mel``: the squared maximum mean discrepancy (Gretton et al. 2012, JMLR 13, Eq. 3,
  the unbiased estimate MMD^2_u) with the Gaussian kernel
  ``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))`` on features standardised by the reference
  set's per-dimension mean and standard deviation; the bandwidth ``sigma^2`` is half the
  median of the squared pairwise distances of the pooled set (the median heuristic,
  Gretton et al. 2012, Sec. 8), so that the kernel of a median pair is exp(-1). Near 0
  (it can be slightly negative) for sets from one distribution; at most 2. Sets larger
  than ``MMD_MAX`` clips are thinned to that many, evenly spread.

Both grow as the loudness or the spectrum of the samples moves away from the reference's,
neither knows what the sounds mean: scores of one reference set and one rate only compare.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

N_MELS = 32
FLOOR_DB = -100.0
#: MMD compares at most this many clips of each set (evenly spread over the set)
MMD_MAX = 2000


def mel_front_end(sample_rate: int) -> tuple[int, int, int]:
    """(n_fft, hop, n_mels) for a rate: a window of about 32 ms (a power of two), a hop of a
    quarter window, at most ``N_MELS`` bands and no more than a quarter of the FFT bins
    (so no band is empty at low rates)."""
    n_fft = 2 ** max(6, round(math.log2(0.032 * sample_rate)))
    return n_fft, n_fft // 4, min(N_MELS, n_fft // 4)


@torch.no_grad()
def log_mel_stats(audio: Tensor, sample_rate: int, batch_size: int = 256) -> Tensor:
    """Per clip, the mean and standard deviation over time of each mel band's power in dB
    (floored at -100 dB).

    Shapes: audio [N, 1, T] or [N, T] -> [N, 2 * n_mels] float64 (means, then stds)."""
    import torchaudio

    n_fft, hop, n_mels = mel_front_end(sample_rate)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop,
                                               n_mels=n_mels, power=2.0)
    x = audio.reshape(len(audio), -1).float().cpu()
    out = []
    for s in range(0, len(x), batch_size):
        db = (10 * torch.log10(mel(x[s:s + batch_size]).double() + 1e-10)).clamp_min(FLOOR_DB)
        out.append(torch.cat([db.mean(-1), db.std(-1)], dim=1))
    return torch.cat(out)


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """sigma^2 of the median heuristic: half the median squared distance between distinct
    points of the pooled set (1.0 when all points coincide)."""
    z = torch.cat([x, y]).double()
    i, j = torch.triu_indices(len(z), len(z), offset=1)
    med = float(np.median(torch.cdist(z, z).square()[i, j].numpy())) if len(i) else 0.0
    return med / 2 if med > 0 else 1.0


def mmd2(x: Tensor, y: Tensor, sigma2: float | None = None) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, Eq. 3) of samples x [m, D] and y [n, D]
    with the Gaussian kernel exp(-|a - b|^2 / (2 sigma2)); ``sigma2`` defaults to the median
    heuristic (:func:`median_bandwidth`)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"MMD needs at least 2 clips per set, got {m} and {n}")
    if sigma2 is None:
        sigma2 = median_bandwidth(x, y)

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).square() / (2 * sigma2))

    kxx, kyy = k(x, x), k(y, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * k(x, y).mean())


def standardise(x: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """x and ref in units of ref's per-dimension standard deviation around ref's mean
    (dimensions constant in ref are only centred)."""
    mu, sd = ref.mean(0), ref.std(0)
    sd = torch.where(sd > 1e-9, sd, torch.ones_like(sd))
    return (x - mu) / sd, (ref - mu) / sd


def label_free_scores(feats: Tensor, ref_feats: Tensor, ref_stats=None) -> dict[str, float]:
    """``fd_mel`` and ``mmd_mel`` of log-mel statistics [N, D] against the reference's
    [M, D] (``ref_stats``: the reference's precomputed ``gaussian_stats``)."""
    from domains.audio.metrics import frechet_distance, gaussian_stats

    if len(feats) < 2:
        raise ValueError(f"the label-free audio metrics need at least 2 clips, got {len(feats)}")
    mu, cov = gaussian_stats(feats)
    fd = frechet_distance(mu, cov, *(ref_stats or gaussian_stats(ref_feats)))
    return {"fd_mel": fd, "mmd_mel": mmd2(*standardise(_spread(feats), _spread(ref_feats)))}


def _spread(x: Tensor) -> Tensor:
    """At most ``MMD_MAX`` rows, evenly spread (the kernel matrices stay small)."""
    return x if len(x) <= MMD_MAX else x[torch.linspace(0, len(x) - 1, MMD_MAX).long()]
