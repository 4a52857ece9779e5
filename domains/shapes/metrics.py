"""Point-cloud set metrics of the PointFlow protocol (Yang et al. 2019, sec. 5; the code
stevenygd/PointFlow metrics/evaluation_metrics.py that PVD and LION reuse).

Distances between two clouds a, b of N points each:

* Chamfer distance, squared Euclidean distances, each direction averaged over its points and
  the two directions summed (PointFlow's ``dl.mean(1) + dr.mean(1)``):
  ``CD(a, b) = mean_i min_j |a_i - b_j|^2 + mean_j min_i |a_i - b_j|^2``.
* Earth mover's distance, the optimal one-to-one matching with Euclidean (not squared)
  costs divided by N (PointFlow's ``match_cost / N``): ``EMD(a, b) = min_pi mean_i
  |a_i - b_pi(i)|``. ``emd_exact`` solves the assignment (Jonker-Volgenant via SciPy; equal
  to POT's ``ot.emd2`` with uniform weights, tests/test_shapes_metrics.py);
  ``emd_sinkhorn`` is the entropic approximation (Cuturi 2013) for large clouds.

Set metrics over generated S and reference R (``set_metrics``):

* MMD: mean over r in R of min over s in S of D(r, s) (PointFlow's ``lgan_mmd``).
* COV: fraction of R that is the nearest reference of some s in S (``lgan_cov``).
* 1-NNA: accuracy of the leave-one-out 1-nearest-neighbour classifier on S u R (``knn``
  with k = 1); 50 % is ideal, and two identical sets score 0 % because each cloud's
  nearest neighbour is its twin in the other set.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from diffplat.runtime import subnormals_kept

Distance = Callable[[Tensor, Tensor], Tensor]


# SciPy's cKDTree can crash the process (segmentation fault) building a tree under the
# flush-to-zero mode that the diffplat CLI and trainer set, as tests/data/kdtree_ftz_cloud.npy
# does: every k-d tree here is built and queried inside this.
_denormals_kept = subnormals_kept


def _sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances [..., N, M] via |a|^2 + |b|^2 - 2 a.b (one batched matmul)."""
    d = (a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :] - 2 * a @ b.transpose(
        -1, -2)
    return d.clamp_(min=0)


def chamfer(a: Tensor, b: Tensor) -> Tensor:
    """Chamfer distance of paired clouds (module doc).

    Shapes:
        a [B, N, 3], b [B, M, 3] -> [B].
    """
    d = _sqdist(a, b)
    return d.amin(2).mean(1) + d.amin(1).mean(1)


def chamfer_matrix(x: Tensor, y: Tensor, chunk_elements: int = 1 << 25,
                   symmetric: bool = False, method: str = "auto") -> Tensor:
    """All-pairs Chamfer distances.

    Args:
        x, y: sets of clouds (on any device; the work runs there).
        chunk_elements: the brute-force method holds about this many squared distances at
            once (blocks of clouds against clouds).
        symmetric: x is y (saves half of the work).
        method: "brute" (batched matmul distances, the GPU path), "kdtree" (exact nearest
            neighbours with SciPy's cKDTree, about 7x faster than brute force on a 2-core
            CPU for 2048 points, docs/shapes.md), or "auto": brute on a GPU or for clouds
            under 512 points, else kdtree.

    Shapes:
        x [P, N, 3], y [Q, M, 3] -> [P, Q] (float64 on the CPU).
    """
    if method not in ("auto", "brute", "kdtree"):
        raise ValueError(f"unknown Chamfer method {method!r}; valid: auto, brute, kdtree")
    if method == "auto":
        method = "brute" if x.device.type != "cpu" or x.shape[1] < 512 else "kdtree"
    if method == "kdtree":
        return _chamfer_matrix_kdtree(x, y, symmetric)
    P, N, _ = x.shape
    Q, M, _ = y.shape
    out = torch.zeros(P, Q, dtype=torch.float64)
    per_block = max(1, chunk_elements // (N * M))
    rows = max(1, min(P, int(per_block ** 0.5)))
    cols = max(1, per_block // rows)
    for i in range(0, P, rows):
        a = x[i:i + rows]
        for j in range(i if symmetric else 0, Q, cols):
            b = y[j:j + cols]
            d = _sqdist(a[:, None], b[None])                      # [r, c, N, M]
            cd = d.amin(3).mean(2) + d.amin(2).mean(2)
            out[i:i + len(a), j:j + len(b)] = cd.double().cpu()
    if symmetric:
        out = torch.triu(out) + torch.triu(out, 1).T
    return out


def _directed(trees: list, points: np.ndarray) -> np.ndarray:
    """[P, Q]: mean over the points of cloud i of the squared distance to the nearest point
    of cloud j, one tree query of all P clouds' points per j."""
    P, N, _ = points.shape
    flat = points.reshape(-1, 3)
    out = np.empty((P, len(trees)))
    for j, tree in enumerate(trees):
        d = tree.query(flat, k=1, workers=-1)[0]
        out[:, j] = (d * d).reshape(P, N).mean(1)
    return out


@_denormals_kept()
def _chamfer_matrix_kdtree(x: Tensor, y: Tensor, symmetric: bool) -> Tensor:
    from scipy.spatial import cKDTree

    xs = x.detach().double().cpu().numpy()
    ys = xs if symmetric else y.detach().double().cpu().numpy()
    tx = [cKDTree(c) for c in xs]
    d_xy = _directed([cKDTree(c) for c in ys] if not symmetric else tx, xs)   # x -> y
    d_yx = d_xy.T if symmetric else _directed(tx, ys).T                     # y -> x
    return torch.from_numpy(d_xy + d_yx)


_SAFETY_REL, _SAFETY_ABS = 1e-5, 1e-5             # relative, and absolute in voxel units^2


def _check_clouds(name: str, clouds: Tensor) -> Tensor:
    if clouds.ndim != 3 or clouds.shape[-1] != 3 or len(clouds) < 2:
        raise ValueError(f"{name} needs clouds [P >= 2, N, 3], got {tuple(clouds.shape)}")
    x = clouds.detach().double().cpu()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: the clouds contain NaN or Inf coordinates")
    return x


def voxel_fields(x: Tensor, resolution: int = 48, band: int = 3,
                 batch: int = 16) -> tuple[Tensor, Tensor, Tensor]:
    """Per-cloud lower bounds of squared point-to-cloud distances on a shared voxel grid.

    Voxelise the bounding box of all clouds with cubic voxels of side h (``resolution``
    voxels along the longest side). For each cloud Y the field holds, per voxel a, min over
    y in Y of the squared distance from the box of a to y, capped at (band * h)^2 beyond
    ``band`` voxels of every point (a voxel more than ``band`` voxels away along some axis is
    at least band * h from y). Every point x lies in its voxel's box, so
    ``d(x, Y)^2 >= field_Y[voxel(x)]``. Computed by a scatter-min over each point's
    (2 band + 1)^3 voxel neighbourhood, less a small safety margin for rounding.

    Returns:
        field [P, U] float64 in data units^2, over the U voxels that hold some point;
        voxel [P, N], the column of every point; mean [P, U] sparse, 1/N per point, so
        ``mean @ f.T`` averages a per-voxel quantity f over each cloud's points.
    """
    P, N, _ = x.shape
    lo, hi = x.reshape(-1, 3).amin(0), x.reshape(-1, 3).amax(0)
    h = max(float((hi - lo).max()), 1e-12) / resolution
    # a margin of band + 1 voxels all round: every neighbourhood stays inside the grid,
    # rounding included
    origin = lo - (band + 1) * h
    dims = ((hi - origin) / h).floor().long() + band + 2
    rel = (x - origin) / h
    vox = rel.floor().long()
    frac = (rel - vox).float().clamp(0, 1)            # position inside the voxel, [P, N, 3]
    strides = torch.stack([dims[1] * dims[2], dims[2], torch.tensor(1)])
    flat = (vox * strides).sum(-1)                    # voxel of every point, [P, N]
    used, inv = torch.unique(flat, return_inverse=True)
    V = int(dims.prod())
    o = torch.arange(-band, band + 1)
    offsets = (o[:, None, None] * strides[0] + o[None, :, None] * strides[1]
               + o[None, None, :] * strides[2]).reshape(-1)
    of = o.float()
    low = torch.empty(P, len(used))                   # squared distance fields, voxel units
    for s in range(0, P, batch):
        fr = frac[s:s + batch, :, :, None]            # [B, N, 3, 1]
        B = len(fr)
        idx = (flat[s:s + B, :, None] + offsets + (torch.arange(B) * V)[:, None, None])
        near = (of - fr).clamp_min(0) + (fr - of - 1).clamp_min(0)   # box to point, per axis
        d2 = near * near
        total = (d2[:, :, 0, :, None, None] + d2[:, :, 1, None, :, None]
                 + d2[:, :, 2, None, None, :])
        field = torch.full((B * V,), float(band * band))
        field.scatter_reduce_(0, idx.reshape(-1), total.reshape(-1), "amin")
        low[s:s + B] = field.view(B, V)[:, used]
    low = ((low - _SAFETY_ABS).clamp_min(0) * (1 - _SAFETY_REL)).double() * h * h
    rows = torch.arange(P).repeat_interleave(N)
    with torch.sparse.check_sparse_tensor_invariants(enable=True):
        mean = torch.sparse_coo_tensor(torch.stack([rows, inv.reshape(-1)]),
                                       torch.full((P * N,), 1.0 / N, dtype=torch.float64),
                                       (P, len(used))).coalesce()
    return low, inv.reshape(P, N), mean


class _PrunedNearest:
    """Exact nearest-neighbour queries within a fixed set of clouds from all-pairs lower
    bounds (``self.lower``) and an exact distance that may give up early
    (``_exact_or_bound``). Candidates are visited in order of their bounds, and one whose
    bound exceeds the best exact distance so far is skipped; ties go to the lower index, as
    with ``argmin``."""

    lower: np.ndarray

    def __init__(self, points: np.ndarray):
        from scipy.spatial import cKDTree

        self.points = points
        self.num_points = points.shape[1]
        with _denormals_kept():
            self._trees = [cKDTree(p) for p in points]
        self._exact: dict[tuple[int, int], float] = {}
        self._bound: dict[tuple[int, int], float] = {}
        self.exact_pairs = 0                          # pairs computed in full

    def _compute(self, i: int, j: int, limit: float) -> tuple[float, bool]:
        """(distance, True), or (a lower bound above ``limit``, False)."""
        raise NotImplementedError

    def _exact_or_bound(self, i: int, j: int, threshold: float) -> tuple[float, bool]:
        """(distance, True), or (a lower bound above ``threshold``, False) when the exact
        value is certainly above it; both cached."""
        key = (i, j) if i < j else (j, i)
        if key in self._exact:
            return self._exact[key], True
        # bounds are sums of float64 terms: a tolerance keeps rounding from abandoning a
        # pair whose exact distance ties the threshold
        limit = threshold * (1 + 1e-9) + 1e-300
        if self._bound.get(key, -1.0) > limit:
            return self._bound[key], False
        value, exact = self._compute(i, j, limit)
        if exact:
            self._exact[key] = value
            self.exact_pairs += 1
        else:
            self._bound[key] = value
        return value, exact

    @_denormals_kept()
    def distance(self, i: int, j: int) -> float:
        """The exact distance of clouds i and j (cached)."""
        return self._exact_or_bound(i, j, float("inf"))[0]

    def _candidates(self, i: int, cols, bound: float, strict: bool) -> np.ndarray:
        cols = np.asarray(cols, dtype=np.int64)
        cols = cols[cols != i]
        lb = self.lower[i, cols]
        keep = lb < bound if strict else lb <= bound
        return cols[keep][np.argsort(lb[keep], kind="stable")]

    @_denormals_kept()
    def nearest(self, i: int, cols) -> tuple[int, float]:
        """The cloud among ``cols`` (cloud i itself excluded) nearest to cloud i and its
        exact distance; ties go to the lower index."""
        best, arg = float("inf"), -1
        for j in self._candidates(i, cols, best, strict=False):
            if self.lower[i, j] > best:               # sorted: every later bound is larger
                break
            d, exact = self._exact_or_bound(i, int(j), best)
            if exact and (d < best or (d == best and j < arg)):
                best, arg = d, int(j)
        if arg < 0:
            raise ValueError("nearest needs at least one candidate besides the query")
        return arg, best

    @_denormals_kept()
    def any_within(self, i: int, cols, bound: float, strict: bool = False) -> bool:
        """Whether some cloud among ``cols`` (i excluded) is within ``bound`` of cloud i
        (strictly below it if ``strict``)."""
        for j in self._candidates(i, cols, bound, strict):
            d, exact = self._exact_or_bound(i, int(j), bound)
            if exact and (d < bound or (not strict and d == bound)):
                return True
        return False


class ChamferIndex(_PrunedNearest):
    """Exact nearest-neighbour queries under the Chamfer distance within a fixed set of
    clouds, the CPU path of ``set_metrics``: all-pairs lower bounds first, exact distances
    only for the pairs the bounds cannot rule out.

    The bound: averaging ``voxel_fields`` over the points of X bounds the X -> Y term of
    CD(X, Y) from below, for all pairs at once (one sparse matrix product); the two
    directions add up.

    The search (``_PrunedNearest``): a visited candidate is computed exactly with k-d trees
    a growing chunk of points at a time, each chunk replacing its points' lower bounds with
    exact distances, and abandoned as soon as the bound exceeds the best so far. Distances
    are float64 from SciPy's cKDTree; results are identical to the full matrices'
    (tests/test_shapes_metrics.py).

    The saving depends on the data: on 400 + 400 clouds of 2,048 points, mixed classes need
    about 1 in 300 pairs exactly and a single tight class (mugs) partial work on about half
    of them (benchmarks/shapes_metrics_speed.py, docs/shapes.md).

    Args:
        clouds: [P, N, 3], the whole set (samples and references together).
        resolution, band, batch: of ``voxel_fields``.
    """

    def __init__(self, clouds: Tensor, resolution: int = 48, band: int = 3,
                 batch: int = 16):
        x = _check_clouds("ChamferIndex", clouds)
        low, voxel, mean = voxel_fields(x, resolution, band, batch)
        lower = torch.sparse.mm(mean, low.T.contiguous())    # [X, Y]: X -> Y direction
        self.lower = (lower + lower.T).numpy()
        # [P, used voxels]; float32 rounding (1e-7) is far inside the 1e-5 safety margin
        self._field = low.float().numpy()
        self._voxel = voxel.numpy()
        super().__init__(x.numpy())

    def _compute(self, i, j, limit):
        N = self.num_points
        bounds = (self._field[j][self._voxel[i]] / np.float64(N),
                  self._field[i][self._voxel[j]] / np.float64(N))
        total = bounds[0].sum() + bounds[1].sum()
        exact = []
        for q, t, lb in ((i, j, bounds[0]), (j, i, bounds[1])):
            order = np.argsort(-lb, kind="stable")    # far points first: the largest gains
            d2 = np.empty(N)
            start, size = 0, 32
            while start < N:
                sel = order[start:start + size]
                d = self._trees[t].query(self.points[q][sel], k=1)[0]
                d2[sel] = d * d
                total += d2[sel].sum() / N - lb[sel].sum()
                if total > limit:
                    return total, False
                start, size = start + size, size * 2
            exact.append(d2)
        return float(exact[0].mean() + exact[1].mean()), True


class EMDIndex(_PrunedNearest):
    """Exact nearest-neighbour queries under the EMD (``emd_exact``) within a fixed set of
    equal-size clouds, the CPU path of ``set_metrics`` for ``emd="exact"`` and
    ``"subsample"``.

    Bounds: every point's matched partner is at least as far as its nearest neighbour, so
    EMD(X, Y) >= mean over X of d(x, Y), and the same from Y; and EMD >= |mean X - mean Y|
    (the mean of the matched vectors). All pairs get the larger of the centroid bound and the
    voxel-field bound of each direction (``voxel_fields``, square roots averaged); a visited
    pair first gets the exact nearest-neighbour bound from k-d trees, and only if that stays
    below the best so far the assignment itself.
    """

    def __init__(self, clouds: Tensor, resolution: int = 48, band: int = 3,
                 batch: int = 16):
        x = _check_clouds("EMDIndex", clouds)
        low, _, mean = voxel_fields(x, resolution, band, batch)
        directed = torch.sparse.mm(mean, low.sqrt().T.contiguous())   # [X, Y]
        centroid = torch.cdist(x.mean(1), x.mean(1)) * (1 - _SAFETY_REL)
        self.lower = torch.maximum(torch.maximum(directed, directed.T), centroid).numpy()
        super().__init__(x.numpy())

    def _compute(self, i, j, limit):
        a = self._trees[j].query(self.points[i], k=1)[0].mean()
        b = self._trees[i].query(self.points[j], k=1)[0].mean()
        bound = max(a, b) * (1 - _SAFETY_REL)
        if bound > limit:
            return bound, False
        return emd_exact(self.points[i], self.points[j]), True


def _pruned_set_metrics(index: _PrunedNearest, n_r: int, n_s: int, suffix: str,
                        workers: int | None = None) -> dict[str, float]:
    """MMD, COV and 1-NNA from nearest-neighbour queries on an index over references (the
    first n_r clouds) and samples (the next n_s): the same numbers as ``mmd_cov`` and
    ``one_nna`` on full matrices, with their tie rules."""
    from concurrent.futures import ThreadPoolExecutor

    refs, gens = range(n_r), range(n_r, n_r + n_s)
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)
    from diffplat.progress import bar

    progress = bar(total=2 * (n_r + n_s), desc=f"{suffix.upper()} metrics", unit="cloud")

    def tick(result):
        progress.update(1)
        return result

    with ThreadPoolExecutor(workers) as pool, progress:         # SciPy releases the GIL
        ref_nn = list(pool.map(lambda i: tick(index.nearest(i, gens)), refs))
        gen_nn = list(pool.map(lambda i: tick(index.nearest(i, refs)), gens))
        # 1-NNA: a reference is classified right when a reference is at least as close as
        # the nearest sample (the references come first in the argmin, so ties go to them);
        # a sample when another sample is strictly closer than the nearest reference
        ref_ok = pool.map(lambda i: tick(index.any_within(i, refs, ref_nn[i][1])), refs)
        gen_ok = pool.map(lambda i: tick(index.any_within(i, gens, gen_nn[i - n_r][1], True)),
                          gens)
        correct = sum(ref_ok) + sum(gen_ok)
    return {f"mmd_{suffix}": float(np.mean([d for _, d in ref_nn])),
            f"cov_{suffix}": 100 * (len({j for j, _ in gen_nn}) / n_r),   # as set_metrics
            f"1nna_{suffix}": 100 * (correct / (n_r + n_s))}


def pruned_chamfer_metrics(samples: Tensor, reference: Tensor, workers: int | None = None,
                           **index_options) -> tuple[dict[str, float], ChamferIndex]:
    """MMD, COV and 1-NNA with Chamfer through ``ChamferIndex`` (returned too, for its
    counts). ``workers`` threads run the queries (default: the CPU count)."""
    index = ChamferIndex(torch.cat([reference, samples]), **index_options)
    return _pruned_set_metrics(index, len(reference), len(samples), "cd", workers), index


def pruned_emd_metrics(samples: Tensor, reference: Tensor, workers: int | None = None,
                       **index_options) -> tuple[dict[str, float], EMDIndex]:
    """MMD, COV and 1-NNA with the exact EMD through ``EMDIndex`` (returned too)."""
    index = EMDIndex(torch.cat([reference, samples]), **index_options)
    return _pruned_set_metrics(index, len(reference), len(samples), "emd", workers), index


def emd_exact(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Exact EMD of two clouds of equal size (module doc): mean matched Euclidean distance."""
    from scipy.optimize import linear_sum_assignment

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"EMD needs clouds of equal size, got {a.shape} and {b.shape}")
    cost = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def emd_sinkhorn(a: Tensor, b: Tensor, epsilon: float = 1e-3, iters: int = 300) -> Tensor:
    """Entropic approximation of the EMD (Cuturi 2013): log-domain Sinkhorn iterations with
    uniform marginals and epsilon scaling (the regularisation falls geometrically from the
    mean cost to ``epsilon`` x mean cost over the first half of the iterations, Schmitzer
    2019, sec. 3.2), then the plan is rounded onto the transport polytope (Altschuler et al.
    2017, Algorithm 2). The rounded plan is feasible, so the value is an upper bound of the
    exact EMD; its error against the exact value is measured in
    benchmarks/shapes_metrics_speed.py and docs/shapes.md.

    Args:
        epsilon: final entropic regularisation, relative to the mean cost of each pair.
        iters: Sinkhorn iterations (each updates both potentials).

    Shapes:
        a [B, N, 3], b [B, N, 3] -> [B].
    """
    cost = _sqdist(a, b).clamp_min(1e-12).sqrt()                     # [B, N, N]
    scale = cost.mean((1, 2))[:, None]
    n = a.shape[1]
    log_mu = -float(np.log(n))
    f = torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device)
    g = torch.zeros_like(f)
    anneal = max(1, iters // 2)
    for k in range(iters):
        eps = scale * epsilon ** min(1.0, (k + 1) / anneal)
        f = eps * (log_mu - torch.logsumexp((g[:, None, :] - cost) / eps[..., None], 2))
        g = eps * (log_mu - torch.logsumexp((f[:, :, None] - cost) / eps[..., None], 1))
    plan = torch.exp((f[:, :, None] + g[:, None, :] - cost) / eps[..., None])
    # rounding (Altschuler et al. 2017): scale rows, then columns, down to the marginals,
    # and spread the missing mass as a rank-one correction
    target = 1.0 / n
    plan = plan * (target / plan.sum(2).clamp_min(1e-300)).clamp(max=1)[:, :, None]
    plan = plan * (target / plan.sum(1).clamp_min(1e-300)).clamp(max=1)[:, None, :]
    err_r, err_c = target - plan.sum(2), target - plan.sum(1)
    plan = plan + err_r[:, :, None] * err_c[:, None, :] / err_r.sum(1).clamp_min(1e-300)[
        :, None, None]
    return (plan * cost).sum((1, 2))


EMD_METHODS = ("exact", "sinkhorn", "subsample")


def subsample(x: Tensor, points: int, seed: int = 0) -> Tensor:
    """The same fixed-seed random ``points`` of every cloud. [B, N, 3] -> [B, points, 3]."""
    if points >= x.shape[1]:
        return x
    idx = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(seed))[:points]
    return x[:, idx.to(x.device)]


SUBSAMPLE_POINTS = 512


def emd_matrix(x: Tensor, y: Tensor, method: str = "exact", symmetric: bool = False,
               batch: int = 64, points: int = SUBSAMPLE_POINTS, **options) -> Tensor:
    """All-pairs EMD with ``method`` exact (assignment per pair), sinkhorn (batched; the
    GPU path) or subsample (exact assignment between ``points`` fixed random points of each
    cloud; the CPU approximation for 2048-point clouds, about 20x cheaper at 512 points).

    Shapes:
        x [P, N, 3], y [Q, N, 3] -> [P, Q] float64.
    """
    if method not in EMD_METHODS:
        raise ValueError(f"unknown EMD method {method!r}; valid: {', '.join(EMD_METHODS)}")
    P, Q = len(x), len(y)
    pairs = [(i, j) for i in range(P) for j in range(i if symmetric else 0, Q)]
    out = torch.zeros(P, Q, dtype=torch.float64)
    if method == "subsample":
        x, y = subsample(x, points), subsample(y, points)
        method = "exact"
    if method == "exact":
        xs, ys = x.double().cpu().numpy(), y.double().cpu().numpy()
        for i, j in pairs:
            out[i, j] = emd_exact(xs[i], ys[j])
    else:
        for s in range(0, len(pairs), batch):
            idx = torch.tensor(pairs[s:s + batch])
            d = emd_sinkhorn(x[idx[:, 0]], y[idx[:, 1]], **options)
            out[idx[:, 0], idx[:, 1]] = d.double().cpu()
    if symmetric:
        out = torch.triu(out) + torch.triu(out, 1).T
    return out


def mmd_cov(d_sr: Tensor) -> tuple[float, float]:
    """PointFlow's ``lgan_mmd_cov``: (MMD, COV) from distances [N_sample, N_ref]."""
    mmd = float(d_sr.min(0).values.mean())
    cov = len(torch.unique(d_sr.argmin(1))) / d_sr.shape[1]
    return mmd, cov


def one_nna(d_rr: Tensor, d_rs: Tensor, d_ss: Tensor) -> float:
    """PointFlow's ``knn(Mxx, Mxy, Myy, k=1)`` accuracy: the leave-one-out 1-NN classifier
    on references (label 1) and samples (label 0)."""
    n_r, n_s = len(d_rr), len(d_ss)
    full = torch.cat([torch.cat([d_rr, d_rs], 1), torch.cat([d_rs.T, d_ss], 1)], 0).clone()
    full.fill_diagonal_(float("inf"))
    label = torch.cat([torch.ones(n_r), torch.zeros(n_s)])
    pred = label[full.argmin(0)]
    return int((pred == label).sum()) / len(label)


CHAMFER_METHODS = ("auto", "pruned", "kdtree", "brute")


def set_metrics(samples: Tensor, reference: Tensor, emd: str | None = "exact",
                emd_max: int | None = None, device: str | torch.device = "cpu",
                chamfer: str = "auto", emd_search: bool | None = None,
                **emd_options) -> dict[str, float]:
    """MMD, COV and 1-NNA with Chamfer (and EMD unless ``emd`` is None) of generated clouds
    against reference clouds, as percentages for COV and 1-NNA.

    Args:
        samples, reference: the two sets, any sizes.
        emd: None, "exact", "sinkhorn" or "subsample" (``emd_matrix``); options such as
            ``points`` go to ``emd_matrix``.
        emd_search: for the exact EMD methods ("exact", "subsample"), find nearest
            neighbours with ``EMDIndex`` instead of filling the full matrices (the same
            numbers, far fewer assignments); None = on a CPU.
        emd_max: score the EMD metrics on the first ``emd_max`` clouds of each set only
            (EMD is the expensive part on a CPU); None = all.
        device: where the brute-force Chamfer blocks run.
        chamfer: how the Chamfer metrics are computed, all exactly: "brute" (full distance
            matrices from batched blocks on ``device``), "kdtree" (full matrices with
            cKDTree on the CPU), "pruned" (``ChamferIndex``: bounds and exact nearest
            neighbours only, the fast CPU path), or "auto": brute on a GPU, else pruned
            (kdtree when the two sets' clouds differ in size).

    Shapes:
        samples [S, N, 3], reference [R, N, 3].
    """
    for name, t in (("samples", samples), ("reference", reference)):
        if t.ndim != 3 or t.shape[-1] != 3:
            raise ValueError(f"{name} must have shape [num, points, 3], got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contain NaN or Inf coordinates")
    if chamfer not in CHAMFER_METHODS:
        raise ValueError(f"unknown Chamfer method {chamfer!r}; valid: "
                         f"{', '.join(CHAMFER_METHODS)}")
    device = torch.device(device)
    if chamfer == "auto":
        chamfer = ("brute" if device.type != "cpu" else
                   "pruned" if samples.shape[1] == reference.shape[1] else "kdtree")
    if chamfer == "pruned" and samples.shape[1] != reference.shape[1]:
        raise ValueError(f"chamfer 'pruned' needs clouds of one size, got "
                         f"{samples.shape[1]} and {reference.shape[1]} points; use 'kdtree'")
    s, r = samples.float().to(device), reference.float().to(device)
    if chamfer == "pruned":
        out = pruned_chamfer_metrics(s.cpu(), r.cpu())[0]
    else:
        out = {}
        d_rs = chamfer_matrix(r, s, method=chamfer)
        out["mmd_cd"], cov = mmd_cov(d_rs.T)
        out["cov_cd"] = 100 * cov
        out["1nna_cd"] = 100 * one_nna(chamfer_matrix(r, r, symmetric=True, method=chamfer),
                                       d_rs, chamfer_matrix(s, s, symmetric=True,
                                                            method=chamfer))
    if emd:
        k = emd_max or max(len(s), len(r))
        s, r = s[:k], r[:k]
        if emd_search is None:
            emd_search = device.type == "cpu"
        if emd_search and emd in ("exact", "subsample"):
            if emd == "subsample":
                points = emd_options.get("points", SUBSAMPLE_POINTS)
                s, r = subsample(s, points), subsample(r, points)
            if s.shape[1] != r.shape[1]:
                raise ValueError(f"EMD needs clouds of equal size, got {s.shape[1]} and "
                                 f"{r.shape[1]} points")
            out.update(pruned_emd_metrics(s.cpu(), r.cpu())[0])
        else:
            d_rs = emd_matrix(r, s, emd, **emd_options)
            out["mmd_emd"], cov = mmd_cov(d_rs.T)
            out["cov_emd"] = 100 * cov
            out["1nna_emd"] = 100 * one_nna(emd_matrix(r, r, emd, symmetric=True,
                                                       **emd_options),
                                            d_rs, emd_matrix(s, s, emd, symmetric=True,
                                                             **emd_options))
        out["num_emd"] = float(min(len(s), len(r)))
    out["num"], out["num_ref"] = float(len(samples)), float(len(reference))
    return out
