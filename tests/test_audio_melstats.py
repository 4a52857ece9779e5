"""The label-free audio metrics (domains/audio/melstats.py) against independent answers:
the Frechet distance from scipy's sqrtm, MMD from a plain double loop and from the closed
form for Gaussians, and the log-mel statistics of tones and gains."""

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from domains.audio import melstats as S


def _noise(n, rate=8000, seconds=0.5, gain=0.1, seed=0, lowpass=False):
    gen = torch.Generator().manual_seed(seed)
    x = gain * torch.randn(n, 1, int(rate * seconds), generator=gen)
    if lowpass:  # a different spectrum: a moving average of 8 samples
        x = torch.nn.functional.avg_pool1d(x, 8, 1, padding=4)[..., :x.shape[-1]]
    return x


def test_frechet_distance_of_log_mel_stats_is_the_closed_form():
    a = S.log_mel_stats(_noise(40, seed=1), 8000)
    b = S.log_mel_stats(_noise(30, gain=0.3, seed=2, lowpass=True), 8000)
    got = S.label_free_scores(a, b)["fd_mel"]
    # the closed form, computed here with numpy and scipy.linalg.sqrtm
    x, y = a.numpy(), b.numpy()
    m1, m2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(c1 @ c2).real
    want = float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))
    assert got == pytest.approx(want, rel=1e-6)
    assert got > 100  # 9.5 dB louder and low-passed: far apart in dB^2
    same = S.label_free_scores(a, a)
    assert abs(same["fd_mel"]) < 1e-6 * want


def test_mmd_matches_a_double_loop_and_the_median_heuristic():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(5, 3, generator=gen, dtype=torch.float64) + 0.7
    pooled = np.concatenate([x.numpy(), y.numpy()])
    d2 = [((p - q) ** 2).sum() for i, p in enumerate(pooled) for j, q in enumerate(pooled)
          if i != j]
    sigma2 = float(np.median(d2)) / 2
    assert S.median_bandwidth(x, y) == pytest.approx(sigma2)

    def k(p, q):
        return math.exp(-((p - q) ** 2).sum() / (2 * sigma2))

    xs, ys = x.numpy(), y.numpy()
    xx = sum(k(p, q) for i, p in enumerate(xs) for j, q in enumerate(xs) if i != j) / (7 * 6)
    yy = sum(k(p, q) for i, p in enumerate(ys) for j, q in enumerate(ys) if i != j) / (5 * 4)
    xy = sum(k(p, q) for p in xs for q in ys) / (7 * 5)
    assert S.mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        S.mmd2(x[:1], y)


def test_mmd_is_zero_for_one_distribution_and_grows_with_a_shift_as_the_closed_form():
    gen = torch.Generator().manual_seed(4)
    d, n, draws, sigma2 = 4, 1000, 8, 2.0

    def pair():
        return (torch.randn(n, d, generator=gen, dtype=torch.float64),
                torch.randn(n, d, generator=gen, dtype=torch.float64))

    x, y = pair()
    assert abs(S.mmd2(x, x)) < 2 / n  # the unbiased estimate of a set with itself: -O(1/n)
    assert abs(S.mmd2(x, y)) < 0.005
    # N(0, I) against N(mu, I), Gaussian kernel of variance sigma2 (Gretton et al. 2012):
    # MMD^2 = 2 (sigma2 / (sigma2 + 2))^(d/2) (1 - exp(-|mu|^2 / (2 (sigma2 + 2)))); the
    # mean of 8 independent estimates has a standard error of about 0.003
    sets = [pair() for _ in range(draws)]
    previous = 0.0
    for shift in (0.25, 0.5, 1.0, 2.0):
        mu = torch.full((d,), shift / math.sqrt(d), dtype=torch.float64)
        exact = 2 * (sigma2 / (sigma2 + 2)) ** (d / 2) * (
            1 - math.exp(-float(mu @ mu) / (2 * (sigma2 + 2))))
        got = sum(S.mmd2(a, b + mu, sigma2) for a, b in sets) / draws
        assert got == pytest.approx(exact, abs=0.01)
        assert got > previous  # grows with the shift
        previous = got
    # the scoring path (standardised, median bandwidth) grows with a shift as well
    scores = [S.label_free_scores(y + s, x)["mmd_mel"] for s in (0.0, 0.5, 1.0)]
    assert abs(scores[0]) < 0.005 and scores[0] < scores[1] < scores[2]


def test_log_mel_stats_see_the_pitch_and_the_gain():
    rate = 16000
    t = torch.arange(rate // 2) / rate
    low = 0.3 * torch.sin(2 * math.pi * 300 * t)
    high = 0.3 * torch.sin(2 * math.pi * 3000 * t)
    f = S.log_mel_stats(torch.stack([low, high, 2 * low])[:, None], rate)
    n_fft, _, n_mels = S.mel_front_end(rate)
    assert f.shape == (3, 2 * n_mels) and (n_fft, n_mels) == (512, 32)
    # the loudest band of the 3 kHz tone lies above the 300 Hz tone's
    assert int(f[1, :n_mels].argmax()) > int(f[0, :n_mels].argmax())
    # twice the amplitude: every band's mean power rises 20 log10 2 = 6.02 dB, the spread
    # over time stays (in the bands well above the 1e-10 added before the log)
    band = f[0, :n_mels] > -50
    assert band.sum() >= 8
    assert torch.allclose(f[2, :n_mels][band] - f[0, :n_mels][band],
                          torch.full((int(band.sum()),), 20 * math.log10(2),
                                     dtype=torch.float64), atol=1e-3)
    assert torch.allclose(f[2, n_mels:][band], f[0, n_mels:][band], atol=1e-3)
    # low rates keep every band non-empty: no all-zero mel filter at 4 kHz
    assert S.mel_front_end(4000) == (128, 32, 32)
