"""DiffWave's metrics on hand-computed cases, and the multi-resolution STFT distance."""

import math

import numpy as np
import pytest
import torch

from domains.audio import metrics as M


def test_inception_score_hand_cases():
    one_hot = torch.eye(10).repeat(7, 1)  # every class equally often, certain predictions
    assert M.inception_score(one_hot) == pytest.approx(10.0, rel=1e-9)
    same = torch.tensor([[0.2, 0.3, 0.5]]).repeat(5, 1)  # no information: IS = 1
    assert M.inception_score(same) == pytest.approx(1.0, rel=1e-12)
    # two soft predictions, half each: KL to the marginal by hand
    p, q = [0.8, 0.2], [0.3, 0.7]
    m = [0.55, 0.45]

    def kl(a, b):
        return sum(x * math.log(x / y) for x, y in zip(a, b))

    probs = torch.tensor([p, q], dtype=torch.float64)
    assert M.inception_score(probs) == pytest.approx(math.exp((kl(p, m) + kl(q, m)) / 2))
    # mIS averages KL over all four ordered pairs, two of which are 0
    assert M.modified_inception_score(probs) == pytest.approx(
        math.exp((kl(p, q) + kl(q, p)) / 4))
    assert M.modified_inception_score(probs, chunk=1) == pytest.approx(
        M.modified_inception_score(probs))
    # AM: KL(train marginal || generated marginal) + mean entropy
    train = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    gen = torch.tensor([p], dtype=torch.float64).repeat(3, 1)
    entropy = -sum(x * math.log(x) for x in p)
    assert M.am_score(gen, train) == pytest.approx(kl([0.5, 0.5], p) + entropy)


def test_fid_identical_shifted_and_closed_form():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=gen, dtype=torch.float64) @ torch.randn(
        6, 6, generator=gen, dtype=torch.float64)
    assert abs(M.fid(a, a)) < 1e-6
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0], dtype=torch.float64)
    # same covariance: the trace term vanishes and FID = |shift|^2 exactly
    assert M.fid(a + shift, a) == pytest.approx(float(shift @ shift), rel=1e-6)
    # diagonal covariances: sum (s1 + s2 - 2 sqrt(s1 s2)) + |mu1 - mu2|^2
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    exact = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert M.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(exact)


def test_kmeans_and_ndb():
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    x = centres.repeat_interleave(100, 0) + 0.1 * torch.randn(300, 2, generator=gen,
                                                             dtype=torch.float64)
    found = M.kmeans(x, 3, seed=0)
    dist = torch.cdist(found, centres).min(1).values
    assert (dist < 0.1).all()
    assert M.ndb(x, x, k=3) == (0, 0.0)  # identical sets: no bin differs
    # all generated points in one cluster: every bin's share differs significantly
    assert M.ndb(x[:100], x, k=3) == (3, 1.0)
    # same proportions, different points: no bin differs
    y = centres.repeat_interleave(100, 0) + 0.1 * torch.randn(300, 2, generator=gen,
                                                             dtype=torch.float64)
    assert M.ndb(y, x, k=3)[0] == 0


def test_multi_resolution_stft_distance():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8000, generator=gen)
    assert torch.allclose(M.multi_resolution_stft(x, x), torch.zeros(2, dtype=torch.float64))
    # y = 2x: spectral convergence |2 - 1| / 2 = 0.5, log-magnitude difference log 2
    d = M.multi_resolution_stft(x, 2 * x)
    assert torch.allclose(d, torch.full((2,), 0.5 + math.log(2), dtype=torch.float64))
    with pytest.raises(ValueError, match="paired"):
        M.multi_resolution_stft(x, x[:, :, :100])
