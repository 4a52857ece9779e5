"""Molecules as diffusion tensors: positions and atom features in one ragged tensor.

A batch of molecules becomes x of shape [N_atoms, 3 + K + 1] (EDM's layout, Hoogeboom et al.
2022): centred positions, the one-hot atom type divided by 4 and the atomic number divided by
10 (EDM's normalisation factors [1, 4, 10]), plus ``batch`` [N_atoms], the molecule of each
row. Decoding takes the argmax of the one-hot block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

_PERIODIC_TABLE = """
H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se
Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy
Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf
Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og
"""
#: atomic numbers of every element (a user's data may hold any of them)
SYMBOL_TO_Z = {s: z for z, s in enumerate(_PERIODIC_TABLE.split(), start=1)}
QM9_ELEMENTS = ("H", "C", "N", "O", "F")


@dataclass
class Molecule:
    """One molecule: positions in Angstrom [n, 3] and element symbols."""

    positions: np.ndarray
    symbols: list[str]
    name: str = ""
    #: property values a conditional model was asked for (``{"alpha": 80.0}``)
    properties: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.symbols)


class Featurizer:
    """Maps molecules to the diffusion tensor and back.

    Args:
        elements: the element vocabulary (one-hot order).
        include_charges: append the atomic number column (EDM's QM9 default).
        onehot_scale, charge_scale: EDM's normalisation factors 4 and 10.
    """

    def __init__(self, elements: tuple[str, ...] | list[str] = QM9_ELEMENTS,
                 include_charges: bool = True, onehot_scale: float = 4.0,
                 charge_scale: float = 10.0):
        self.elements = tuple(elements)
        self.index = {s: i for i, s in enumerate(self.elements)}
        self.include_charges = include_charges
        self.onehot_scale, self.charge_scale = onehot_scale, charge_scale
        self.charges = torch.tensor([SYMBOL_TO_Z[s] for s in self.elements],
                                    dtype=torch.float32)

    @property
    def num_features(self) -> int:
        return len(self.elements) + int(self.include_charges)

    def type_indices(self, symbols: list[str], where: str = "") -> Tensor:
        try:
            return torch.tensor([self.index[s] for s in symbols], dtype=torch.long)
        except KeyError as err:
            raise ValueError(f"{where}element {err.args[0]!r} is outside the vocabulary "
                             f"{list(self.elements)}") from None

    def encode(self, positions: Tensor, types: Tensor) -> Tensor:
        """One molecule: positions [n, 3] (centred here) and type indices [n] -> [n, 3+F]."""
        pos = positions - positions.mean(0, keepdim=True)
        onehot = torch.nn.functional.one_hot(types, len(self.elements)).float()
        cols = [pos.float(), onehot / self.onehot_scale]
        if self.include_charges:
            cols.append((self.charges[types] / self.charge_scale)[:, None])
        return torch.cat(cols, 1)

    def collate(self, items: list[Tensor]) -> dict[str, Tensor]:
        """Encoded molecules -> {"x": [N, 3+F], "batch": [N], "num_graphs": B}."""
        x = torch.cat(items)
        batch = torch.repeat_interleave(torch.arange(len(items)),
                                        torch.tensor([len(i) for i in items]))
        return {"x": x, "batch": batch, "num_graphs": len(items)}

    def decode(self, x: Tensor, batch: Tensor, num_graphs: int) -> list[Molecule]:
        """Sampler output -> molecules (argmax of the one-hot block)."""
        x = x.detach().cpu().double()
        batch = batch.detach().cpu()
        order = torch.argsort(batch, stable=True)
        x, batch = x[order], batch[order]
        types = x[:, 3 : 3 + len(self.elements)].argmax(1)
        counts = torch.bincount(batch, minlength=num_graphs).tolist()
        out = []
        for pos, typ in zip(torch.split(x[:, :3], counts), torch.split(types, counts)):
            out.append(Molecule(pos.numpy(), [self.elements[int(t)] for t in typ]))
        return out
