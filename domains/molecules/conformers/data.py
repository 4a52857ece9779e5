"""Conformer data: QM9 geometries with their bond graphs, multi-conformer SDF files (GEOM
layout), ETKDG+MMFF ensembles as extra targets, and ragged batches of graph + coordinates.

Every molecule becomes a ``MolGraph`` whose ``conformers`` list holds its target geometries
([n, 3] arrays in the graph's atom order).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, rdBase
from torch import Tensor
from torch.utils.data import Dataset

from domains.molecules.conformers.graph import (
    GraphError,
    MolGraph,
    mol_from_xyz,
    mol_to_graph,
    with_stereo_from_3d,
)


def qm9_graphs(cache, indices: Sequence[int], vocabulary: dict[str, int],
               skipped: dict[str, int]) -> list[MolGraph]:
    """QM9 molecules as graphs: bonds and orders from the DFT geometry (DetermineBonds,
    total charge 0), atom order and coordinates of the cache; molecules for which that fails
    are left out and counted in ``skipped`` under their reason."""
    out = []
    with rdBase.BlockLogs():
        for i in indices:
            pos, z = cache.molecule(int(i))
            try:
                graph = mol_to_graph(mol_from_xyz(pos, z), vocabulary, name=f"qm9:{int(i)}")
            except GraphError as err:
                skipped[err.reason] = skipped.get(err.reason, 0) + 1
                continue
            graph.conformers = [np.asarray(pos, dtype=np.float64)]
            out.append(graph)
    return out


def _sdf_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".sdf")
        if not files:
            raise ValueError(f"{path}: no .sdf files in this folder")
        return files
    if path.suffix.lower() != ".sdf":
        raise ValueError(f"{path}: conformer data must be a QM9 cache (.npz), an .sdf file or "
                         "a folder of .sdf files")
    return [path]


def sdf_graphs(path: Path, vocabulary: dict[str, int] | None, skip_bad: bool,
               skipped: dict[str, int], group_by: str = "smiles") -> list[MolGraph]:
    """Multi-conformer SDF files -> one graph per molecule with all its conformers.

    Records are grouped by canonical isomeric SMILES (stereo perceived from each record's 3D
    coordinates; ``group_by="smiles"``) or by their title line (``"name"``, the GEOM
    layout). Conformers listed in another atom order than the group's first record are
    mapped onto it by a substructure match. Hydrogens are kept as in the file.

    Args:
        vocabulary: element -> index; None builds it from the data (sorted by atomic number).

    Raises:
        ValueError naming the file and record, unless ``skip_bad`` (then counted).
    """
    if group_by not in ("smiles", "name"):
        raise ValueError(f"group_by must be 'smiles' or 'name', not {group_by!r}")
    groups: dict[str, list[Chem.Mol]] = {}
    for file in _sdf_files(path):
        supplier = Chem.SDMolSupplier(str(file), removeHs=False, sanitize=True)
        with rdBase.BlockLogs():
            for k, mol in enumerate(supplier, start=1):
                reason = None
                if mol is None:
                    reason = "malformed: RDKit cannot parse or sanitise this record"
                elif mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
                    reason = "no_3d: the record has no 3D coordinates"
                if reason is not None:
                    if not skip_bad:
                        raise ValueError(f"{file}: record {k}: {reason}")
                    key = reason.split(":")[0]
                    skipped[key] = skipped.get(key, 0) + 1
                    continue
                mol = with_stereo_from_3d(mol)
                title = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
                key = title if group_by == "name" and title else Chem.MolToSmiles(mol)
                groups.setdefault(key, []).append(mol)
    if vocabulary is None:
        present = {a.GetSymbol(): a.GetAtomicNum() for ms in groups.values()
                   for a in ms[0].GetAtoms()}
        vocabulary = {s: i for i, s in enumerate(sorted(present, key=present.get))}
    out = []
    for key, mols in groups.items():
        try:
            graph = mol_to_graph(mols[0], vocabulary, name=key)
        except GraphError as err:
            if not skip_bad:
                raise ValueError(f"{path}: molecule {key}: {err}") from None
            skipped[err.reason] = skipped.get(err.reason, 0) + 1
            continue
        for m in mols:
            pos = m.GetConformer().GetPositions()
            if m is not mols[0]:
                match = m.GetSubstructMatch(mols[0])
                if len(match) != mols[0].GetNumAtoms():
                    skipped["mismatch"] = skipped.get("mismatch", 0) + 1
                    continue
                pos = pos[list(match)]
            graph.conformers.append(pos)
        out.append(graph)
    return out


def add_etkdg_targets(graphs: list[MolGraph], num: int, mmff: bool = True,
                      seed: int = 0) -> int:
    """Append ``num`` ETKDG (+ MMFF) conformers to every graph's targets; returns how many
    were added (molecules RDKit cannot embed get none)."""
    from domains.molecules.conformers.baseline import rdkit_conformers

    added = 0
    for g in graphs:
        confs = rdkit_conformers(g.mol, num, mmff=mmff, seed=seed)
        g.conformers.extend(confs)
        added += len(confs)
    return added


def encode(graph: MolGraph, positions: np.ndarray, num_elements: int) -> dict[str, Tensor]:
    """One (graph, conformer) pair -> tensors: centred positions and graph inputs."""
    pos = torch.as_tensor(np.asarray(positions), dtype=torch.float32)
    ei, ea = graph.pair_features()
    return {"x": pos - pos.mean(0, keepdim=True),
            "node_attr": torch.from_numpy(graph.node_features(num_elements)),
            "edge_index": torch.from_numpy(ei), "edge_attr": torch.from_numpy(ea),
            "chiral": torch.from_numpy(graph.chiral)}


def collate(items: list[dict[str, Tensor]]) -> dict[str, object]:
    """Encoded molecules -> one ragged batch (atoms concatenated, edge and stereocentre
    indices offset). Keys: x [N, 3], batch [N], num_graphs, node_attr [N, F], edge_index
    [2, E], edge_attr [E, D], chiral_index [C, 4], chiral_sign [C]."""
    sizes = torch.tensor([len(it["x"]) for it in items])
    offsets = torch.cumsum(sizes, 0) - sizes
    chiral = torch.cat([it["chiral"] for it in items]).reshape(-1, 5)
    shift = torch.repeat_interleave(offsets, torch.tensor([len(it["chiral"]) for it in items]))
    return {
        "x": torch.cat([it["x"] for it in items]),
        "batch": torch.repeat_interleave(torch.arange(len(items)), sizes),
        "num_graphs": len(items),
        "node_attr": torch.cat([it["node_attr"] for it in items]),
        "edge_index": torch.cat([it["edge_index"] + o for it, o in zip(items, offsets)], 1),
        "edge_attr": torch.cat([it["edge_attr"] for it in items]),
        "chiral_index": chiral[:, :4] + shift[:, None],
        "chiral_sign": chiral[:, 4].float(),
    }


class ConformerDataset(Dataset):
    """Every (molecule, target conformer) pair of a list of graphs, or only the first
    conformer of each molecule (``first_only``, for validation losses)."""

    def __init__(self, graphs: list[MolGraph], num_elements: int, first_only: bool = False):
        self.graphs, self.num_elements = graphs, num_elements
        self.items = [(g, c) for g, graph in enumerate(graphs)
                      for c in range(1 if first_only else len(graph.conformers))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        g, c = self.items[i]
        return encode(self.graphs[g], self.graphs[g].conformers[c], self.num_elements)
