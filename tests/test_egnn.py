"""EGNNBackbone: E(3) equivariance, permutation equivariance, ragged batching, sampling."""

import pytest
import torch

from diffplat import samplers
from diffplat.noise import ZeroCoMGaussian, com
from diffplat.targets import Denoiser
from domains.molecules.egnn import EGNNBackbone, fully_connected_edges
from tests.helpers import random_orthogonal

F = 6
SIZES = [3, 9, 5, 4]
B = len(SIZES)
DT = torch.float64
TOL = {"rtol": 1e-9, "atol": 1e-10}

CONFIGS = {
    "edm": {},
    "plain": {"attention": False, "tanh": False, "normalization_factor": 4.0},
    "context_edges": {"context_dim": 2, "edge_dim": 3, "inv_sublayers": 2},
    "rbf": {"rbf": 8, "rbf_cutoff": 6.0},
}


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    # a large last-layer gain so the coordinate updates are far from the identity
    opts = {"num_features": F, "hidden": 16, "layers": 2, "coord_init_gain": 1.0, **kw}
    return EGNNBackbone(**opts).to(DT).eval()


def _batch(sizes=SIZES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.cat([torch.full((n,), g) for g, n in enumerate(sizes)])
    x = torch.randn(batch.numel(), 3 + F, generator=gen, dtype=DT) * 1.5
    c_noise = torch.randn(len(sizes), generator=gen, dtype=DT)
    return x, c_noise, batch


def _extras(model, batch, num_graphs, seed=1):
    """context and edge_attr (invariant inputs) for configs that need them."""
    gen = torch.Generator().manual_seed(seed)
    kw = {}
    if model.context_dim:
        kw["context"] = torch.randn(num_graphs, model.context_dim, generator=gen, dtype=DT)
    if model.edge_dim:
        ei = fully_connected_edges(batch, num_graphs)
        kw["edge_index"] = ei
        kw["edge_attr"] = torch.randn(ei.shape[1], model.edge_dim, generator=gen, dtype=DT)
    return kw


def _close(a, b):
    scale = float(b.abs().max())
    torch.testing.assert_close(a, b, rtol=TOL["rtol"], atol=TOL["atol"] * max(scale, 1.0))


def test_edges_are_all_pairs_within_each_graph():
    batch = torch.tensor([2, 0, 1, 2, 0, 2, 2, 1, 0])
    ei = fully_connected_edges(batch, 4)  # graph 3 is empty
    got = sorted(map(tuple, ei.t().tolist()))
    want = sorted((i, j) for i in range(9) for j in range(9)
                  if i != j and batch[i] == batch[j])
    assert got == want
    assert fully_connected_edges(torch.zeros(1, dtype=torch.long), 1).shape == (2, 0)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("det", [1, -1])
def test_rotation_and_reflection_equivariance(config, det):
    model = _model(**CONFIGS[config])
    x, c_noise, batch = _batch()
    kw = _extras(model, batch, B)
    q = random_orthogonal(det)
    with torch.no_grad():
        out = model(x, c_noise, batch, B, **kw)
        xr = torch.cat([x[:, :3] @ q.T, x[:, 3:]], 1)
        out_r = model(xr, c_noise, batch, B, **kw)
    assert float(out[:, :3].abs().max()) > 1e-2  # the positions really move
    _close(out_r[:, :3], out[:, :3] @ q.T)
    _close(out_r[:, 3:], out[:, 3:])


@pytest.mark.parametrize("config", CONFIGS)
def test_translation_invariance_and_zero_mean_output(config):
    model = _model(**CONFIGS[config])
    x, c_noise, batch = _batch()
    kw = _extras(model, batch, B)
    shift = torch.randn(B, 3, generator=torch.Generator().manual_seed(5), dtype=DT) * 10
    with torch.no_grad():
        out = model(x, c_noise, batch, B, **kw)
        out_t = model(torch.cat([x[:, :3] + shift[batch], x[:, 3:]], 1), c_noise, batch, B,
                      **kw)
    _close(out_t, out)
    assert float(com(out[:, :3], batch, B).abs().max()) < 1e-14


def test_permutation_equivariance_across_graphs():
    model = _model(**CONFIGS["context_edges"])
    x, c_noise, batch = _batch()
    kw = _extras(model, batch, B)
    gen = torch.Generator().manual_seed(7)
    perm = torch.randperm(x.shape[0], generator=gen)  # shuffle nodes across graph boundaries
    relabel = torch.randperm(B, generator=gen)  # and rename the graphs
    inv = torch.argsort(relabel)
    batch_p = relabel[batch[perm]]
    ei_p = fully_connected_edges(batch_p, B)
    # edge features follow the edges: look up each permuted edge in the original ordering
    old = {tuple(e): k for k, e in enumerate(kw["edge_index"].t().tolist())}
    idx = torch.tensor([old[(int(perm[i]), int(perm[j]))] for i, j in ei_p.t().tolist()])
    with torch.no_grad():
        out = model(x, c_noise, batch, B, **kw)
        out_p = model(x[perm], c_noise[inv], batch_p, B, context=kw["context"][inv],
                      edge_index=ei_p, edge_attr=kw["edge_attr"][idx])
    _close(out_p, out[perm])


def test_default_edges_match_explicit_edges():
    model = _model()
    x, c_noise, batch = _batch()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model(x[perm], c_noise, batch[perm], B)
        b = model(x[perm], c_noise, batch[perm], B,
                  edge_index=fully_connected_edges(batch[perm], B))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_graphs_do_not_interact():
    model = _model(**CONFIGS["edm"])
    x, c_noise, batch = _batch()
    # replace graph 1 by a different molecule of another size and noise level
    x2, c2, batch2 = _batch([3, 6, 5, 4], seed=9)
    keep = batch != 1
    xb = torch.cat([x[batch == 0], x2[batch2 == 1], x[batch == 2], x[batch == 3]])
    bb = torch.cat([torch.full((n,), g) for g, n in enumerate([3, 6, 5, 4])])
    cb = c_noise.clone()
    cb[1] = c2[1]
    with torch.no_grad():
        out = model(x, c_noise, batch, B)
        out_b = model(xb, cb, bb, B)
    _close(out_b[bb != 1], out[keep])
    assert not torch.allclose(out_b[bb == 1][:3], out[batch == 1][:3])


def test_input_checks():
    model = _model(**CONFIGS["context_edges"])
    x, c_noise, batch = _batch()
    with pytest.raises(ValueError, match="context"):
        model(x, c_noise, batch, B)
    with pytest.raises(ValueError, match=r"shape \[N, 9\]"):
        model(x[:, :5], c_noise, batch, B)


def test_parameter_count_matches_edm_at_its_qm9_setting():
    n = sum(p.numel() for p in EGNNBackbone(num_features=6, hidden=256, layers=9).parameters())
    assert 5.3e6 < n < 5.4e6  # EDM reports 5.3M parameters on QM9


def _sample(name, model, noise, batch, gen_seed=0, steps=6):
    space = ZeroCoMGaussian(batch, B)
    den = Denoiser(model, "polynomial", "eps", noise_space=space)
    coms = []

    def check(info):
        for key in ("x", "denoised"):
            coms.append(float(com(info[key][:, :3], batch, B).abs().max()))

    with torch.no_grad():
        out = samplers.get(name)(lambda x, t: den(x, t, batch=batch, num_graphs=B), noise,
                                 den.schedule, steps, noise_space=space, callback=check,
                                 generator=torch.Generator().manual_seed(gen_seed))
    return out, coms


def test_deterministic_sampler_is_equivariant_and_centred():
    model = _model()
    _, _, batch = _batch()
    space = ZeroCoMGaussian(batch, B)
    noise = space.sample_like(torch.empty(batch.numel(), 3 + F, dtype=DT),
                              torch.Generator().manual_seed(0))
    q = random_orthogonal(-1, seed=3)
    out, coms = _sample("heun", model, noise, batch)
    out_r, coms_r = _sample("heun", model, torch.cat([noise[:, :3] @ q.T, noise[:, 3:]], 1),
                            batch)
    assert len(coms) == 2 * 6 and max(coms + coms_r) < 1e-12
    assert float(com(out[:, :3], batch, B).abs().max()) < 1e-12
    _close(out_r[:, :3], out[:, :3] @ q.T)
    _close(out_r[:, 3:], out[:, 3:])
    assert float((out[:, :3] - noise[:, :3]).abs().max()) > 1e-2


def test_stochastic_sampler_stays_centred():
    """Fresh noise breaks exact equivariance of a single draw; the CoM stays zero."""
    model = _model()
    _, _, batch = _batch()
    space = ZeroCoMGaussian(batch, B)
    noise = space.sample_like(torch.empty(batch.numel(), 3 + F, dtype=DT),
                              torch.Generator().manual_seed(0))
    out, coms = _sample("ddpm", model, noise, batch, gen_seed=2)
    assert len(coms) == 2 * 6 and max(coms) < 1e-12
    assert float(com(out[:, :3], batch, B).abs().max()) < 1e-12
    assert torch.isfinite(out).all()


def test_backward_and_float32():
    model = _model(**CONFIGS["context_edges"]).float().train()
    x, c_noise, batch = _batch()
    kw = {k: v.float() if v.is_floating_point() else v
          for k, v in _extras(model, batch, B).items()}
    out = model(x.float(), c_noise.float(), batch, B, **kw)
    assert out.dtype == torch.float32
    out.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
