"""ZeroCoMGaussian: the ragged, zero-centre-of-mass noise space of 3D point sets."""

import math

import pytest
import torch
from torch import nn

from diffplat import losses, samplers, schedules
from diffplat.losses import DiffusionLoss
from diffplat.noise import GaussianNoise, ZeroCoMGaussian, com
from diffplat.targets import Denoiser

SIZES = [3, 7, 1, 5]  # a single-node graph included: its positions are pinned to 0
F = 2
B = len(SIZES)


def _ragged(seed=0, shuffle=True):
    """An unsorted ragged batch: x [N, 3 + F], batch [N]."""
    gen = torch.Generator().manual_seed(seed)
    batch = torch.cat([torch.full((n,), g) for g, n in enumerate(SIZES)])
    if shuffle:
        batch = batch[torch.randperm(batch.numel(), generator=gen)]
    x = torch.randn(batch.numel(), 3 + F, generator=gen, dtype=torch.float64) + 2.0
    return x, batch


def _naive_com(x, batch):
    return torch.stack([x[batch == g, :3].mean(0) for g in range(B)])


def _max_com(x, batch):
    return float(com(x[:, :3], batch, B).abs().max())


def test_com_matches_naive_and_projection_is_idempotent():
    x, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    torch.testing.assert_close(com(x[:, :3], batch, B), _naive_com(x, batch))
    assert _max_com(x, batch) > 0.5  # the raw data are far from centred
    p = space.project(x)
    assert _max_com(p, batch) < 1e-14
    torch.testing.assert_close(space.project(p), p, rtol=0, atol=1e-14)
    torch.testing.assert_close(p[:, 3:], x[:, 3:], rtol=0, atol=0)  # features untouched
    torch.testing.assert_close(p[:, :3], x[:, :3] - _naive_com(x, batch)[batch])
    assert p[batch == 2, :3].abs().max() == 0  # a single node sits at the origin


def test_sample_like_is_centred_and_seeded():
    x, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    e1 = space.sample_like(x, torch.Generator().manual_seed(1))
    e2 = space.sample_like(x, torch.Generator().manual_seed(1))
    assert e1.shape == x.shape and e1.dtype == x.dtype
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    assert _max_com(e1, batch) < 1e-14
    big = torch.zeros(20000, 3 + F, dtype=torch.float64)
    bb = torch.arange(20000) % 4
    e = ZeroCoMGaussian(bb, 4).sample_like(big, torch.Generator().manual_seed(0))
    # each position coordinate of a graph of n nodes has variance (n - 1) / n
    assert abs(float(e[:, :3].var()) - (4999 / 5000)) < 0.03
    assert abs(float(e[:, 3:].var()) - 1.0) < 0.03


def test_dof_batch_size_expand_and_sum_against_a_loop():
    x, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    assert space.batch_size(x) == B
    assert space.dof(x).tolist() == [(n - 1) * 3 + n * F for n in SIZES]
    coef = torch.tensor([0.5, 2.0, -1.0, 3.0], dtype=torch.float64)
    ex = space.expand(coef, x)
    assert ex.shape == (x.shape[0], 1)
    for i in range(x.shape[0]):
        assert ex[i, 0] == coef[batch[i]]
    torch.testing.assert_close(space.expand(torch.tensor(1.5), x), torch.tensor(1.5).double())
    vals = x**2
    naive = torch.stack([vals[batch == g].sum() for g in range(B)])
    torch.testing.assert_close(space.sum(vals), naive)
    torch.testing.assert_close(space.mean(vals), naive / space.dof(x).double())


def test_bad_shapes_are_refused():
    x, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    with pytest.raises(ValueError, match="expected x of shape"):
        space.project(x[:-1])
    with pytest.raises(ValueError, match="num_graphs"):
        ZeroCoMGaussian(batch, B - 1)


class CentredBackbone(nn.Module):
    """A dummy E(3)-equivariant backbone whose position output is CoM-free.

    Rotation-equivariant in positions, invariant in features, and noise-level dependent."""

    def __init__(self, centre: bool = True):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.7, -0.3], dtype=torch.float64))
        self.centre = centre

    def forward(self, x, c_noise, batch, num_graphs):
        pos, feat = x[:, :3], x[:, 3:]
        cn = c_noise[batch][:, None]
        sq = torch.zeros(num_graphs, dtype=x.dtype).index_add(0, batch, pos.pow(2).sum(1))
        pos_out = pos * torch.sigmoid(self.w[0] * cn + 0.1 * sq[batch][:, None])
        if self.centre:
            pos_out = pos_out - com(pos_out, batch, num_graphs)[batch]
        else:
            pos_out = pos_out + 0.3  # leaves the CoM-free space
        return torch.cat([pos_out, torch.tanh(self.w[1] * feat + cn)], 1)


@pytest.mark.parametrize("target", ["eps", "x0", "v", "edm", "flow"])
@pytest.mark.parametrize("weighting", ["uniform", "min_snr", "edm"])
def test_diffusion_loss_on_a_ragged_batch(target, weighting):
    x, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    x0 = space.project(x)
    den = Denoiser(CentredBackbone(), "cosine", target, noise_space=space)
    loss = DiffusionLoss(weighting)
    per, t = loss(den, x0, generator=torch.Generator().manual_seed(0), batch=batch,
                  num_graphs=B)
    assert per.shape == (B,) and t.shape == (B,)
    assert torch.isfinite(per).all()
    per.mean().backward()
    assert den.backbone.w.grad is not None and torch.isfinite(den.backbone.w.grad).all()
    # the same with the space passed to the loss and a denoiser that does not hold it
    plain = Denoiser(CentredBackbone(), "cosine", target)
    per2, _ = loss(plain, x0, generator=torch.Generator().manual_seed(0), noise_space=space,
                   batch=batch, num_graphs=B)
    torch.testing.assert_close(per2, per.detach())


def _centred_noise(batch, seed=0):
    x, _ = _ragged(seed)
    return ZeroCoMGaussian(batch, B).sample_like(x, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", samplers.names())
def test_every_sampler_stays_in_the_com_free_space(name):
    _, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    sched = schedules.get("cosine")
    den = Denoiser(CentredBackbone(), sched, "eps", noise_space=space)
    noise = _centred_noise(batch)
    seen = []

    def check(info):
        for key in ("x", "denoised"):
            seen.append(_max_com(info[key], batch))

    with torch.no_grad():
        out = samplers.get(name)(lambda x, t: den(x, t, batch=batch, num_graphs=B), noise,
                                 sched, 8, generator=torch.Generator().manual_seed(1),
                                 noise_space=space, callback=check)
    assert out.shape == noise.shape and torch.isfinite(out).all()
    assert len(seen) >= (4 if name == "adaptive" else 2 * 8) and max(seen) < 1e-12
    assert _max_com(out, batch) < 1e-12
    assert float(out[:, :3].abs().max()) > 1e-3  # not trivially zero


def test_a_non_centred_denoiser_leaves_the_space():
    """The CoM check above has teeth: an output with a CoM drifts off the subspace."""
    _, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    sched = schedules.get("cosine")
    den = Denoiser(CentredBackbone(centre=False), sched, "eps", noise_space=space)
    with torch.no_grad():
        out = samplers.get("heun")(lambda x, t: den(x, t, batch=batch, num_graphs=B),
                                   _centred_noise(batch), sched, 8, noise_space=space)
    assert _max_com(out, batch) > 1e-3


def test_sample_helper_draws_centred_noise():
    _, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    sched = schedules.get("cosine")
    den = Denoiser(CentredBackbone(), sched, "v", noise_space=space)
    with torch.no_grad():
        out, stats = samplers.sample("ddpm", lambda x, t: den(x, t, batch=batch, num_graphs=B),
                                     (batch.numel(), 3 + F), sched, 5, seed=3,
                                     dtype=torch.float64, noise_space=space)
    assert stats["nfe"] == 5 and _max_com(out, batch) < 1e-12


class _FullDof(ZeroCoMGaussian):
    """The same space but counting every position dimension as free."""

    def dof(self, x):
        return self.counts * x.shape[1]


def test_vlb_runs_and_counts_the_zero_com_degrees_of_freedom():
    x, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    x0 = space.project(x)
    sched = schedules.get("cosine")

    def run(sp):
        den = Denoiser(CentredBackbone(), sched, "eps", noise_space=sp)
        with torch.no_grad():
            return losses.vlb(den, x0, num_steps=100, generator=torch.Generator().manual_seed(4),
                              batch=batch, num_graphs=B)

    ours, full = run(space), run(_FullDof(batch, B))
    for v in ours.values():
        assert v.shape == (B,) and torch.isfinite(v).all()
    # everything but the dof-proportional constants is the same draw for the same seed;
    # the 3 extra dof per graph add 3 * (prior constant + decoder normaliser)
    one = torch.ones(1, dtype=torch.float64)
    a1, s1 = sched.alpha_sigma64(sched.log_snr64(one))
    var0 = torch.exp(-sched.log_snr64(torch.zeros(1, dtype=torch.float64)))
    per_dof = 0.5 * (s1**2 - 1 - torch.log(s1**2)) + 0.5 * torch.log(2 * math.pi * var0)
    torch.testing.assert_close(full["nll"] - ours["nll"], (3 * per_dof).expand(B))
    torch.testing.assert_close(full["diffusion"], ours["diffusion"])


def test_vlb_with_the_space_passed_only_to_vlb():
    x, batch = _ragged()
    space = ZeroCoMGaussian(batch, B)
    den = Denoiser(CentredBackbone(), "cosine", "eps")  # holds the dense default space
    with torch.no_grad():
        out = losses.vlb(den, space.project(x), num_steps=100, noise_space=space,
                         generator=torch.Generator().manual_seed(4), batch=batch,
                         num_graphs=B)
    assert torch.isfinite(out["nll"]).all()


def test_gaussian_noise_unchanged():
    x = torch.randn(4, 3, 2)
    g = GaussianNoise()
    assert g.batch_size(x) == 4 and g.dof(x).tolist() == [6] * 4
    assert g.expand(torch.ones(4), x).shape == (4, 1, 1)
    torch.testing.assert_close(g.project(x), x)


def test_mix_is_the_forward_process_per_graph_and_per_sample():
    """NoiseSpace.mix against a loop over graphs (ragged) and over samples (dense)."""
    gen = torch.Generator().manual_seed(3)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    space = ZeroCoMGaussian(batch, len(SIZES))
    x0 = torch.randn(int(batch.numel()), 5, generator=gen)
    eps = space.sample_like(x0, gen)
    a, s = torch.rand(len(SIZES), generator=gen), torch.rand(len(SIZES), generator=gen)
    got = space.mix(x0, eps, a, s)
    for g in range(len(SIZES)):
        rows = batch == g
        torch.testing.assert_close(got[rows], a[g] * x0[rows] + s[g] * eps[rows])
    dense = GaussianNoise()
    x0, eps = torch.randn(3, 2, 4, generator=gen), torch.randn(3, 2, 4, generator=gen)
    a, s = torch.rand(3, generator=gen), torch.rand(3, generator=gen)
    got = dense.mix(x0, eps, a, s)
    for i in range(3):
        torch.testing.assert_close(got[i], a[i] * x0[i] + s[i] * eps[i])
