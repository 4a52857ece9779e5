"""PointFlow-protocol metrics against hand-computed values and peer libraries."""

import numpy as np
import ot
import pytest
import torch
from scipy.spatial import cKDTree

from domains.shapes.metrics import (
    ChamferIndex,
    EMDIndex,
    chamfer,
    chamfer_matrix,
    emd_exact,
    emd_matrix,
    emd_sinkhorn,
    mmd_cov,
    one_nna,
    set_metrics,
)


def test_chamfer_of_two_point_clouds_by_hand():
    a = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    b = torch.tensor([[[0.0, 0, 0], [0, 2, 0]]])
    # a->b: 0 and min(1, 5) = 1 -> mean 0.5; b->a: 0 and min(4, 5) = 4 -> mean 2
    assert float(chamfer(a, b)) == pytest.approx(2.5)
    assert float(chamfer(b, a)) == pytest.approx(2.5)


def test_chamfer_matrix_matches_a_kd_tree():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 100, 3, generator=gen), torch.rand(7, 100, 3, generator=gen)
    m = chamfer_matrix(x, y, chunk_elements=3 * 100 * 100)     # several blocks
    ref = np.zeros((5, 7))
    for i in range(5):
        for j in range(7):
            dl = cKDTree(y[j].numpy()).query(x[i].numpy())[0] ** 2
            dr = cKDTree(x[i].numpy()).query(y[j].numpy())[0] ** 2
            ref[i, j] = dl.mean() + dr.mean()
    np.testing.assert_allclose(m.numpy(), ref, rtol=1e-4, atol=1e-7)
    sym = chamfer_matrix(x, x, chunk_elements=2 * 100 * 100, symmetric=True)
    np.testing.assert_allclose(sym.numpy(), chamfer_matrix(x, x).numpy(), rtol=1e-6,
                               atol=1e-7)
    # the CPU path for large clouds: exact nearest neighbours from a k-d tree
    kd = chamfer_matrix(x, y, method="kdtree")
    np.testing.assert_allclose(kd.numpy(), ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(chamfer_matrix(x, x, method="kdtree", symmetric=True).numpy(),
                               chamfer_matrix(x, x, method="kdtree").numpy(), rtol=1e-12)


def test_emd_exact_matches_pot_and_hand_cases():
    rng = np.random.default_rng(0)
    a, b = rng.random((40, 3)), rng.random((40, 3))
    w = np.full(40, 1 / 40)
    pot = ot.emd2(w, w, ot.dist(a, b, metric="euclidean"))
    assert emd_exact(a, b) == pytest.approx(pot, rel=1e-9)
    assert emd_exact(a, a[rng.permutation(40)]) == pytest.approx(0.0, abs=1e-12)
    t = np.array([0.3, -0.4, 1.2])                        # |t| = 1.3
    # Euclidean costs: matching each point to its translate costs |t|, and no matching
    # does better (mean |a_i - b_pi(i)| >= |mean(a) - mean(b)| = |t|)
    assert emd_exact(a, a + t) == pytest.approx(1.3, rel=1e-9)
    with pytest.raises(ValueError, match="equal size"):
        emd_exact(a, b[:30])


def test_sinkhorn_approximates_the_exact_emd():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 48, 3, generator=gen, dtype=torch.float64)
    y = torch.rand(2, 48, 3, generator=gen, dtype=torch.float64)
    approx = emd_sinkhorn(x, y)
    exact = torch.tensor([emd_exact(x[i], y[i]) for i in range(2)], dtype=torch.float64)
    rel = (approx - exact) / exact
    # the rounded plan is feasible: an upper bound, here within 1 %
    assert torch.all(rel >= -1e-12) and torch.all(rel < 0.01), rel
    m = emd_matrix(x, y, "sinkhorn")
    torch.testing.assert_close(m.diagonal(), approx)


def _clustered_clouds(num: int, points: int, seed: int, scales=(0.01, 0.03, 0.1, 0.3)):
    """Jittered copies of three base clouds at several noise levels: near ties and wide
    gaps, the hard case for pruning."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(3, points, 3, generator=gen) * torch.tensor([1.0, 2.0, 0.5])
    out = [base[i % 3] + scales[(i // 3) % len(scales)] * torch.randn(points, 3, generator=gen)
           for i in range(num)]
    return torch.stack(out)


@pytest.mark.parametrize("resolution,band", [(4, 1), (16, 2), (32, 3)])
def test_chamfer_index_bounds_and_nearest_neighbours_match_the_full_matrix(resolution, band):
    x = _clustered_clouds(30, 64, seed=4)
    full = chamfer_matrix(x, x, method="kdtree", symmetric=True).numpy()
    index = ChamferIndex(x, resolution=resolution, band=band)
    off = ~np.eye(len(x), dtype=bool)
    assert np.all(index.lower[off] <= full[off]), "a lower bound exceeds the distance"
    assert np.all(index.lower >= 0)
    # bounds worth having: on average at least a tenth of the distance at this resolution
    if resolution >= 16:
        assert np.mean(index.lower[off] / full[off]) > 0.1
    masked = np.where(off, full, np.inf)
    for i in range(len(x)):
        j, d = index.nearest(i, range(len(x)))
        assert j == masked[i].argmin() and d == pytest.approx(masked[i].min(), rel=1e-12)
        others = [k for k in range(len(x)) if k != i]
        second = np.sort(masked[i])[1]
        assert index.any_within(i, others, second) and not index.any_within(i, others,
                                                                            d, strict=True)
    assert index.distance(0, 5) == pytest.approx(full[0, 5], rel=1e-12)
    assert index.exact_pairs < len(x) * (len(x) - 1) / 2      # something was pruned
    with pytest.raises(ValueError, match="NaN"):
        ChamferIndex(x.index_fill(1, torch.tensor([3]), float("nan")))


def test_chamfer_index_bounds_hold_at_any_scale_offset_and_resolution():
    rng = np.random.default_rng(7)
    for _ in range(150):
        scale, shift = 10.0 ** rng.uniform(-3, 3), rng.uniform(-100, 100, 3)
        x = torch.from_numpy(rng.random((4, 8, 3)) * scale + shift * scale)
        x[1, 0] = x[0, 0]                             # points on shared voxel boundaries
        index = ChamferIndex(x, resolution=int(rng.integers(1, 60)),
                             band=int(rng.integers(1, 4)))
        full = chamfer_matrix(x, x, method="kdtree").numpy()
        off = ~np.eye(4, dtype=bool)
        assert np.all(index.lower[off] <= full[off])


def test_pruned_chamfer_metrics_equal_the_full_matrices_ties_included():
    ref = _clustered_clouds(16, 48, seed=5)
    gen = _clustered_clouds(14, 48, seed=6)
    ref[7] = ref[2]                   # a tie among the references
    gen[3] = ref[4]                   # a sample that copies a reference: distance 0
    gen[9] = gen[10]                  # a tie among the samples
    kd = set_metrics(gen, ref, emd=None, chamfer="kdtree")
    brute = set_metrics(gen, ref, emd=None, chamfer="brute")
    pruned = set_metrics(gen, ref, emd=None, chamfer="pruned")
    for key in ("cov_cd", "1nna_cd"):
        assert pruned[key] == kd[key] == brute[key], key
    assert pruned["mmd_cd"] == pytest.approx(kd["mmd_cd"], rel=1e-12)
    assert pruned["mmd_cd"] == pytest.approx(brute["mmd_cd"], rel=1e-5)
    assert set_metrics(gen, ref, emd=None)["1nna_cd"] == kd["1nna_cd"]   # auto: pruned
    with pytest.raises(ValueError, match="valid: auto, pruned, kdtree, brute"):
        set_metrics(gen, ref, emd=None, chamfer="fast")
    with pytest.raises(ValueError, match="one size"):
        set_metrics(gen[:, :40], ref, emd=None, chamfer="pruned")
    # clouds of different sizes fall back to the full k-d tree matrices
    assert set_metrics(gen[:, :40], ref, emd=None)["cov_cd"] == set_metrics(
        gen[:, :40], ref, emd=None, chamfer="kdtree")["cov_cd"]


def test_emd_index_bounds_and_pruned_emd_metrics_equal_the_full_matrices():
    x = _clustered_clouds(20, 24, seed=8)
    full = emd_matrix(x, x, "exact", symmetric=True).numpy()
    index = EMDIndex(x, resolution=16, band=2)
    off = ~np.eye(len(x), dtype=bool)
    assert np.all(index.lower[off] <= full[off]) and np.mean(index.lower[off] / full[off]) > 0.2
    masked = np.where(off, full, np.inf)
    for i in range(len(x)):
        j, d = index.nearest(i, range(len(x)))
        assert j == masked[i].argmin() and d == pytest.approx(masked[i].min(), rel=1e-12)
    assert index.exact_pairs < len(x) * (len(x) - 1) / 2
    # the set metrics, ties included, for both exact EMD methods
    ref, gen = _clustered_clouds(12, 24, seed=9), _clustered_clouds(10, 24, seed=10)
    ref[5], gen[2], gen[7] = ref[1], ref[3], gen[8]
    for emd, options in (("exact", {}), ("subsample", {"points": 16})):
        pruned = set_metrics(gen, ref, emd=emd, emd_search=True, **options)
        full_m = set_metrics(gen, ref, emd=emd, emd_search=False, **options)
        for key in ("cov_emd", "1nna_emd", "num_emd"):
            assert pruned[key] == full_m[key], (emd, key)
        assert pruned["mmd_emd"] == pytest.approx(full_m["mmd_emd"], rel=1e-12)


@pytest.mark.parametrize("emd,options", [("exact", {}), ("subsample", {"points": 20}),
                                         ("sinkhorn", {"iters": 30}),
                                         (None, {"chamfer": "kdtree"}),
                                         (None, {"chamfer": "brute"})])
def test_identical_sets_as_in_pointflow(emd, options):
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(5, 30, 3, generator=gen)
    out = set_metrics(x, x.clone(), emd=emd, **options)
    if emd is None:
        out.update(cov_emd=100, mmd_emd=0, **{"1nna_emd": 0})
    assert out["cov_cd"] == 100 and out["cov_emd"] == 100
    assert out["mmd_cd"] == pytest.approx(0, abs=1e-6)
    assert out["mmd_emd"] == pytest.approx(0, abs=1e-3)
    # each cloud's nearest neighbour is its twin in the other set: all misclassified
    assert out["1nna_cd"] == 0 and out["1nna_emd"] == 0


def test_mmd_cov_and_1nna_on_hand_made_distances():
    # 3 samples x 2 references
    d_sr = torch.tensor([[1.0, 5.0], [2.0, 6.0], [0.5, 9.0]])
    mmd, cov = mmd_cov(d_sr)
    assert mmd == pytest.approx((0.5 + 5.0) / 2)   # per reference: min over samples
    assert cov == 0.5                              # every sample's nearest is reference 0
    # two references near each other, two samples near each other, far apart: 100 %
    d_rr = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    d_ss = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    d_rs = torch.full((2, 2), 10.0)
    assert one_nna(d_rr, d_rs, d_ss) == 1.0
    # each reference's nearest is a sample and vice versa: 0 %
    assert one_nna(d_rr * 10, torch.eye(2) + 0.5, d_ss * 10) == 0.0
    # the PointFlow knn() classifier on the same matrices (an independent formulation)
    M = torch.cat([torch.cat([d_rr, d_rs], 1), torch.cat([d_rs.T, d_ss], 1)], 0)
    label = torch.tensor([1.0, 1, 0, 0])
    _, idx = (M + torch.diag(torch.full((4,), float("inf")))).topk(1, 0, False)
    assert float((label[idx[0]] == label).float().mean()) == one_nna(d_rr, d_rs, d_ss)


def test_separated_sets_score_the_worst_values():
    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(5, 40, 3, generator=gen)
    far = torch.rand(5, 40, 3, generator=gen) + torch.tensor([10.0, 0, 0])
    out = set_metrics(far, ref, emd=None)
    assert out["1nna_cd"] == 100 and out["cov_cd"] <= 100 * 3 / 5
    assert out["mmd_cd"] > 2 * 9.0**2 * 0.9 and "mmd_emd" not in out
    with pytest.raises(ValueError, match="NaN"):
        set_metrics(far.masked_fill(far > 10.5, float("nan")), ref, emd=None)


def test_k_d_trees_survive_flushed_denormals():
    """The diffplat CLI and trainer flush subnormal floats to zero for speed; under that mode
    SciPy's cKDTree crashes the process on this cloud (a flat-bottomed procedural shape,
    found by `diffplat evaluate`). The metrics keep subnormals around their trees, and give
    the thread's mode back afterwards. Run in a child process: a crash would take pytest
    down with it."""
    import subprocess
    import sys
    from pathlib import Path

    cloud = Path(__file__).parent / "data" / "kdtree_ftz_cloud.npy"
    code = f"""
import numpy as np, torch
from diffplat.runtime import flush_subnormals, subnormals_flushed as _denormals_flushed
from domains.shapes.metrics import ChamferIndex, chamfer_matrix, set_metrics
flush_subnormals()
c = torch.from_numpy(np.load({str(cloud)!r}))
x = torch.stack([c, c + 0.01, c * 1.1, c - 0.02])
assert _denormals_flushed()
index = ChamferIndex(x)
print(index.nearest(0, range(4))[0], float(chamfer_matrix(x, x, method="kdtree")[0, 3]))
print(set_metrics(x[:2], x[2:], emd=None)["cov_cd"])
assert _denormals_flushed(), "the thread's mode was not restored"
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    first, cov = out.stdout.split("\n")[:2]
    assert first.split()[0] == "1" and float(first.split()[1]) > 0 and float(cov) > 0
