"""The graph-conditioned denoiser for conformers: the molecules domain's EGNN with edge
features, positions as the only diffused quantity, and one pseudoscalar per stereocentre.

The graph enters as invariant inputs: node features (element, charge, aromaticity,
hybridisation, degree, ring, stereocentre flag) and pair features on the fully connected
edges (bond type, graph distance, cis/trans across stereo double bonds); see
``domains.molecules.conformers.graph``. An EGNN sees only distances, so its output for the
mirror image of an input is the mirror image of its output: it cannot produce the
enantiomer the chiral tags ask for more often than the other one. Each tetrahedral
centre therefore also gets the input feature ``s * V / (1 + |V|)``, with V the signed
volume det[x_n1 - x_c, x_n2 - x_c, x_n3 - x_c] of its first three neighbours at the current
noisy positions and s = +1 (CCW) / -1 (CW) the tag: a pseudoscalar, invariant under
rotations and translations and odd under reflections. The network stays equivariant under
rotations and translations (SE(3)); a reflection of the positions together with a flip of
every tag reflects the output (tests/test_conformers_backbone.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffplat.backbone import Backbone
from domains.molecules.egnn import EGNNBackbone


def signed_volumes(pos: Tensor, chiral_index: Tensor) -> Tensor:
    """det[x_n1 - x_c, x_n2 - x_c, x_n3 - x_c] for rows (c, n1, n2, n3).

    Shapes:
        pos [N, 3], chiral_index [C, 4] -> [C].
    """
    c = pos.index_select(0, chiral_index[:, 0])
    a, b, d = (pos.index_select(0, chiral_index[:, k]) - c for k in (1, 2, 3))
    return (a * torch.linalg.cross(b, d)).sum(1)


class ConformerEGNN(Backbone):
    """E(3)-EGNN over positions only, conditioned on a molecular graph.

    Args:
        node_dim: node feature columns (``graph.node_dim(len(elements))``; derived from the
            domain by ``diffplat fit``).
        edge_dim: pair feature columns (``graph.PAIR_DIM``; derived likewise).
        hidden, layers, attention, tanh, coords_range, norm_constant, inv_sublayers,
        normalization_factor, coord_init_gain: as in ``EGNNBackbone``.
        chirality: add the signed-volume pseudoscalar of stereocentres (see module
            docstring); without it the network is reflection-equivariant.

    Call:
        ``forward(x, c_noise, batch, num_graphs, node_attr, edge_index, edge_attr,
        chiral_index, chiral_sign)`` with the domain's cond kwargs.

    Shapes:
        x [N, 3] (scaled noisy positions), c_noise [B] or scalar, batch [N], node_attr
        [N, node_dim], edge_index [2, E], edge_attr [E, edge_dim], chiral_index [C, 4],
        chiral_sign [C] -> [N, 3], a displacement with zero mean per molecule.
    """

    def __init__(self, node_dim: int | None = None, edge_dim: int | None = None,
                 hidden: int = 128, layers: int = 6,
                 attention: bool = True, tanh: bool = True, coords_range: float = 15.0,
                 norm_constant: float = 1.0, inv_sublayers: int = 1,
                 normalization_factor: float = 1.0, coord_init_gain: float = 0.001,
                 chirality: bool = True):
        super().__init__()
        if node_dim is None or edge_dim is None:
            raise ValueError("ConformerEGNN needs node_dim and edge_dim; `diffplat fit` derives "
                             "them from the domain (ConformerDomain.backbone_sizes)")
        self.node_dim, self.edge_dim, self.chirality = node_dim, edge_dim, chirality
        self.egnn = EGNNBackbone(
            num_features=node_dim + int(chirality), hidden=hidden, layers=layers,
            attention=attention, tanh=tanh, coords_range=coords_range,
            norm_constant=norm_constant, inv_sublayers=inv_sublayers, edge_dim=edge_dim,
            normalization_factor=normalization_factor, coord_init_gain=coord_init_gain)
        # the EGNN's feature head is not used (features are not diffused); freeze it so it
        # does not count as a trainable parameter
        self.egnn.out.requires_grad_(False)

    def forward(self, x: Tensor, c_noise: Tensor, batch: Tensor, num_graphs: int,
                node_attr: Tensor, edge_index: Tensor, edge_attr: Tensor,
                chiral_index: Tensor | None = None,
                chiral_sign: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"x must be positions of shape [N, 3], got {tuple(x.shape)}")
        if node_attr.shape != (x.shape[0], self.node_dim):
            raise ValueError(f"node_attr must have shape [{x.shape[0]}, {self.node_dim}], "
                             f"got {tuple(node_attr.shape)}")
        cols = [x, node_attr.to(x.dtype)]
        if self.chirality:
            pseudo = x.new_zeros(x.shape[0])
            if chiral_index is not None and chiral_index.numel():
                v = signed_volumes(x, chiral_index)
                pseudo = pseudo.index_add(0, chiral_index[:, 0],
                                          chiral_sign.to(x.dtype) * v / (1 + v.abs()))
            cols.append(pseudo[:, None])
        out = self.egnn(torch.cat(cols, 1), c_noise, batch, num_graphs,
                        edge_index=edge_index, edge_attr=edge_attr)
        return out[:, :3]
