"""An E(n)-equivariant graph network backbone for ragged batches of molecules.

The architecture is the EGNN of Satorras et al. (2021) in the form used by the equivariant
diffusion model EDM (Hoogeboom et al. 2022): blocks of invariant message-passing sublayers
(optionally gated by a sigmoid "attention" on every message) followed by one equivariant
coordinate update, messages over all pairs of atoms of a molecule, squared distances (current
and initial) as edge inputs, coordinate differences normalised by (|x_i - x_j| + C), and
tanh-bounded coordinate steps. The network returns the displacement of the positions with
its per-molecule mean removed, so its position output lives in the zero-centre-of-mass
space of ``diffplat.noise.ZeroCoMGaussian``.

Everything is vectorised over the ragged batch: nodes of all molecules sit in one tensor,
edges are index tensors and messages are summed with ``index_add``; there is no loop over
molecules. Pure torch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from diffplat.backbone import Backbone
from diffplat.noise import com


def fully_connected_edges(batch: Tensor, num_graphs: int | None = None) -> Tensor:
    """All ordered pairs (i, j), i != j, of nodes in the same graph.

    Args:
        batch: graph index of every node (sorted or not).
        num_graphs: number of graphs (default: batch.max() + 1).

    Returns:
        edge_index [2, E] with E = sum_g n_g (n_g - 1): rows (i, receiver) then columns
        (j, sender). Edges are grouped by receiver, receivers in the order of a stable sort
        of ``batch``; this is the order an ``edge_attr`` must follow when no edge_index is
        given to ``EGNNBackbone``.
    """
    batch = batch.long()
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    device = batch.device
    counts = torch.bincount(batch, minlength=num_graphs)
    order = torch.argsort(batch, stable=True)  # node ids grouped by graph
    start = torch.cumsum(counts, 0) - counts  # first sorted position of each graph
    g = batch[order]  # graph of every sorted position
    reps = counts[g]  # every node meets all n_g nodes of its graph (itself included)
    src = torch.repeat_interleave(torch.arange(order.numel(), device=device), reps)
    first = torch.cumsum(reps, 0) - reps
    local = torch.arange(src.numel(), device=device) - first[src]
    dst = start[g][src] + local
    keep = src != dst
    return torch.stack([order[src[keep]], order[dst[keep]]])


def gaussian_rbf(dist: Tensor, num: int, cutoff: float) -> Tensor:
    """``num`` Gaussian radial basis functions of a distance on a fixed grid 0..cutoff.

    exp(-(d - mu_k)^2 / (2 delta^2)), mu_k = k * delta, delta = cutoff / (num - 1): SchNet's
    expansion (Schuett et al. 2017, eq. 5; PyG's GaussianSmearing). Shapes: [E, 1] -> [E, num].
    """
    mu = torch.linspace(0.0, cutoff, num, dtype=dist.dtype, device=dist.device)
    delta = cutoff / max(num - 1, 1)
    return torch.exp(-0.5 * ((dist - mu) / delta) ** 2)


def _geometry(pos: Tensor, row: Tensor, col: Tensor, norm_constant: float,
              eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """(squared distance [E, 1], (x_i - x_j) / (sqrt(d^2 + eps) + C) [E, D])."""
    diff = pos.index_select(0, row) - pos.index_select(0, col)
    radial = diff.pow(2).sum(1, keepdim=True)
    return radial, diff / (torch.sqrt(radial + eps) + norm_constant)


class _PairLinear(nn.Linear):
    """``Linear(cat[h_i, h_j, e_ij])`` computed as (h W_i)[i] + (h W_j)[j] + e W_e + b.

    Same parameters and result as an nn.Linear on the concatenated edge input, but the two
    node terms cost O(N h^2) instead of O(E h^2).
    """

    def __init__(self, hidden: int, edge_in: int):
        super().__init__(2 * hidden + edge_in, hidden)
        self.hidden = hidden

    def forward(self, h: Tensor, row: Tensor, col: Tensor, e: Tensor) -> Tensor:
        k, w = self.hidden, self.weight
        # index_select, not tensor[idx]: its backward is index_add, much faster on CPU
        # than the index_put that advanced indexing falls back to
        h_i = F.linear(h, w[:, :k]).index_select(0, row)
        h_j = F.linear(h, w[:, k:2 * k]).index_select(0, col)
        return torch.addmm(self.bias, e, w[:, 2 * k:].t()).add_(h_i).add_(h_j)


class _GCL(nn.Module):
    """Invariant message passing: m_ij = phi_e(h_i, h_j, e_ij), optionally gated by
    sigmoid(phi_a(m_ij)); then h_i += phi_h(h_i, sum_j m_ij / normalization_factor)."""

    def __init__(self, hidden: int, edge_in: int, attention: bool, normalization_factor: float):
        super().__init__()
        self.edge_in = _PairLinear(hidden, edge_in)
        self.edge_out = nn.Linear(hidden, hidden)
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden))
        self.att = nn.Linear(hidden, 1) if attention else None
        self.normalization_factor = normalization_factor

    def forward(self, h: Tensor, row: Tensor, col: Tensor, e: Tensor) -> Tensor:
        m = F.silu(self.edge_out(F.silu(self.edge_in(h, row, col, e))))
        if self.att is not None:
            m = m * torch.sigmoid(self.att(m))
        agg = h.new_zeros(h.shape).index_add(0, row, m) / self.normalization_factor
        return h + self.node_mlp(torch.cat([h, agg], 1))


class _CoordUpdate(nn.Module):
    """x_i += sum_j unit_ij * phi_x(h_i, h_j, e_ij), phi_x tanh-bounded to coords_range."""

    def __init__(self, hidden: int, edge_in: int, tanh: bool, coords_range: float,
                 normalization_factor: float, init_gain: float):
        super().__init__()
        self.lin1 = _PairLinear(hidden, edge_in)
        self.lin2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.head.weight, gain=init_gain)
        self.tanh = tanh
        self.coords_range = coords_range
        self.normalization_factor = normalization_factor

    def forward(self, h: Tensor, pos: Tensor, row: Tensor, col: Tensor, unit: Tensor,
                e: Tensor) -> Tensor:
        phi = self.head(F.silu(self.lin2(F.silu(self.lin1(h, row, col, e)))))
        if self.tanh:
            phi = torch.tanh(phi) * self.coords_range
        trans = unit * phi
        return pos + pos.new_zeros(pos.shape).index_add(0, row, trans) / self.normalization_factor


class _Block(nn.Module):
    """inv_sublayers invariant GCLs, then one equivariant coordinate update."""

    def __init__(self, hidden: int, edge_in: int, inv_sublayers: int, attention: bool,
                 tanh: bool, coords_range: float, norm_constant: float,
                 normalization_factor: float, init_gain: float, rbf: int = 0,
                 rbf_cutoff: float = 10.0):
        super().__init__()
        self.rbf, self.rbf_cutoff = rbf, rbf_cutoff
        self.gcls = nn.ModuleList(_GCL(hidden, edge_in, attention, normalization_factor)
                                  for _ in range(inv_sublayers))
        self.coord = _CoordUpdate(hidden, edge_in, tanh, coords_range, normalization_factor,
                                  init_gain)
        self.norm_constant = norm_constant

    def forward(self, h: Tensor, pos: Tensor, row: Tensor, col: Tensor,
                edge_static: Tensor) -> tuple[Tensor, Tensor]:
        radial, unit = _geometry(pos, row, col, self.norm_constant)
        cols = [radial]
        if self.rbf:
            cols.append(gaussian_rbf(torch.sqrt(radial + 1e-8), self.rbf, self.rbf_cutoff))
        e = torch.cat([*cols, edge_static], 1)
        for gcl in self.gcls:
            h = gcl(h, row, col, e)
        return h, self.coord(h, pos, row, col, unit, e)


class EGNNBackbone(Backbone):
    """E(n)-equivariant denoiser backbone for molecules (EDM's EGNN dynamics).

    Args:
        num_features: F, invariant feature columns per atom (e.g. 5 one-hot types + charge).
        hidden: width of node embeddings and message MLPs (EDM: 256).
        layers: number of equivariant blocks (EDM on QM9: 9).
        attention: gate every message by sigmoid(Linear(m_ij)) (EDM: True).
        tanh: bound each coordinate step by tanh(.) * coords_range / layers (EDM: True).
        coords_range: total range of the tanh-bounded coordinate updates (EDM: 15).
        norm_constant: C in (x_i - x_j) / (|x_i - x_j| + C) (EDM: 1).
        inv_sublayers: invariant message-passing sublayers per block (EDM: 1).
        context_dim: size of a per-molecule context vector (property conditioning), appended
            to every atom's input features; 0 for none.
        edge_dim: size of optional per-edge input features ``edge_attr``; 0 for none.
        normalization_factor: messages are summed and divided by this (EDM: 1).
        coord_init_gain: xavier gain of the last coordinate layer (EDM: 0.001, so the
            initial network barely moves atoms).
        pos_dims: number of position columns (3 in space; the network is E(n) for any n).
        rbf: number of Gaussian radial basis functions of the current pairwise distance
            added to every block's edge input beside the squared distance (SchNet,
            Schuett et al. 2017; PaiNN); 0 (default) for EDM's squared distance only.
        rbf_cutoff: the RBF centres span 0..rbf_cutoff (in the units of the network's
            input positions, c_in * x_t: Angstrom at low noise for QM9).
        self_condition: accept ``x_self_cond`` [N, pos_dims + F], an earlier x0 estimate
            (self-conditioning, Chen et al. 2022); its invariant parts enter the network:
            the feature estimate beside every atom's input features, and the squared
            distance of every pair under the position estimate (and its RBFs when rbf > 0)
            as a static edge input, so equivariance holds. None or zeros: no estimate.

    Call:
        ``forward(x, c_noise, batch, num_graphs, context=None, edge_index=None,
        edge_attr=None, x_self_cond=None)``; the core passes (c_in * x_t, c_noise) and the
        domain's cond kwargs ``batch``, ``num_graphs`` and optionally ``context``, ``edge_index``
        (precomputed ``fully_connected_edges(batch, num_graphs)`` or any other graph; saves
        rebuilding it at every call) and ``edge_attr`` (ordered like edge_index).

    Shapes:
        x [N, pos_dims + F] (positions first), c_noise [B] (or a scalar), batch [N] with
        values in [0, B), context [B, context_dim], edge_index [2, E], edge_attr
        [E, edge_dim] -> [N, pos_dims + F]: the position displacement with zero mean per
        molecule (equivariant), then the F feature outputs (invariant).
    """

    def __init__(self, num_features: int = 6, hidden: int = 256, layers: int = 9,
                 attention: bool = True, tanh: bool = True, coords_range: float = 15.0,
                 norm_constant: float = 1.0, inv_sublayers: int = 1, context_dim: int = 0,
                 edge_dim: int = 0, normalization_factor: float = 1.0,
                 coord_init_gain: float = 0.001, pos_dims: int = 3, rbf: int = 0,
                 rbf_cutoff: float = 10.0, self_condition: bool = False):
        super().__init__()
        self.supports_self_condition = bool(self_condition)
        self.rbf, self.rbf_cutoff = rbf, rbf_cutoff
        if rbf < 0 or rbf == 1:
            raise ValueError(f"rbf must be 0 (off) or >= 2 basis functions, got {rbf}")
        if rbf_cutoff <= 0:
            raise ValueError(f"rbf_cutoff must be > 0, got {rbf_cutoff}")
        self.num_features = num_features
        self.context_dim = context_dim
        self.edge_dim = edge_dim
        self.pos_dims = pos_dims
        self.norm_constant = norm_constant
        # +1 input column: the noise level c_noise, as EDM appends t
        # (+ F: the self-conditioning feature estimate)
        sc = num_features if self_condition else 0
        self.embed = nn.Linear(num_features + 1 + context_dim + sc, hidden)
        # current squared distance (and its RBFs), initial squared distance, edge_attr, then
        # the squared distance (and its RBFs) under the self-conditioning estimate
        edge_in = 2 + rbf + edge_dim + ((1 + rbf) if self_condition else 0)
        self.blocks = nn.ModuleList(
            _Block(hidden, edge_in, inv_sublayers, attention, tanh,
                   coords_range / max(layers, 1), norm_constant, normalization_factor,
                   coord_init_gain, rbf, rbf_cutoff)
            for _ in range(layers))
        self.out = nn.Linear(hidden, num_features)

    def forward(self, x: Tensor, c_noise: Tensor, batch: Tensor, num_graphs: int,
                context: Tensor | None = None, edge_index: Tensor | None = None,
                edge_attr: Tensor | None = None,
                x_self_cond: Tensor | None = None) -> Tensor:
        p = self.pos_dims
        if x.ndim != 2 or x.shape[1] != p + self.num_features:
            raise ValueError(f"x must have shape [N, {p + self.num_features}] "
                             f"(positions then features), got {tuple(x.shape)}")
        pos, feat = x[:, :p], x[:, p:]
        c_noise = torch.as_tensor(c_noise, dtype=x.dtype, device=x.device).reshape(-1)
        c_noise = c_noise.expand(num_graphs) if c_noise.numel() == 1 else c_noise
        cols = [feat, c_noise[batch][:, None]]
        if self.context_dim:
            if context is None or context.shape != (num_graphs, self.context_dim):
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"context of shape [{num_graphs}, {self.context_dim}] "
                                 f"required, got {got}")
            cols.append(context.to(x.dtype)[batch])
        elif context is not None:
            raise ValueError("context given but the backbone has context_dim=0")
        if edge_index is None:
            edge_index = fully_connected_edges(batch, num_graphs)
        row, col = edge_index[0], edge_index[1]
        radial0, _ = _geometry(pos, row, col, self.norm_constant)
        static = [radial0]
        if self.edge_dim:
            if edge_attr is None or edge_attr.shape != (row.numel(), self.edge_dim):
                got = None if edge_attr is None else tuple(edge_attr.shape)
                raise ValueError(f"edge_attr of shape [{row.numel()}, {self.edge_dim}] "
                                 f"required, got {got}")
            static.append(edge_attr.to(x.dtype))
        elif edge_attr is not None:
            raise ValueError("edge_attr given but the backbone has edge_dim=0")
        if self.supports_self_condition:
            sc = torch.zeros_like(x) if x_self_cond is None else x_self_cond.to(x.dtype)
            if sc.shape != x.shape:
                raise ValueError(f"x_self_cond must have x's shape {tuple(x.shape)}, got "
                                 f"{tuple(sc.shape)}")
            cols.append(sc[:, p:])
            radial_sc, _ = _geometry(sc[:, :p], row, col, self.norm_constant)
            static.append(radial_sc)
            if self.rbf:
                static.append(gaussian_rbf(torch.sqrt(radial_sc + 1e-8), self.rbf,
                                           self.rbf_cutoff))
        elif x_self_cond is not None:
            raise ValueError("x_self_cond given but the backbone has self_condition=False")
        static_e = torch.cat(static, 1)

        h = self.embed(torch.cat(cols, 1))
        q = pos
        for block in self.blocks:
            h, q = block(h, q, row, col, static_e)
        vel = q - pos
        vel = vel - com(vel, batch, num_graphs)[batch]
        return torch.cat([vel, self.out(h)], 1)
