"""Molecular graphs as the condition of conformer generation.

A ``MolGraph`` holds an RDKit molecule with explicit hydrogens, its atoms in the order of the
coordinates the model produces, and the integer tables from which the network's inputs are
built on the fly (features of all n (n - 1) ordered pairs would not fit in memory for QM9):

* node features (``node_features``): element one-hot over the vocabulary, formal charge
  one-hot {-1, 0, +1}, aromatic flag, hybridisation one-hot {s, sp, sp2, sp3, other}, degree
  one-hot {0..4, 5+}, ring flag, "is a stereocentre" flag;
* pair features (``pair_features``, for every ordered pair i != j, fully connected): bond
  type one-hot {none, single, double, triple, aromatic}, graph distance one-hot {1, 2, 3,
  >= 4 or disconnected} and cis / trans flags for substituents across a stereo double bond.
  Fully connected pairs give the network every interatomic distance (as EDM's EGNN); bonds,
  1-3 pairs (angles) and 1-4 pairs (torsions) are what fix a conformer, which is why GeoDiff
  (Xu et al. 2022, sec. 4) extends the bond graph to 2- and 3-hop neighbours; the one-hot
  graph distance gives the same information on the fully connected graph;
* tetrahedral centres (``chiral``): rows (centre, n1, n2, n3, sign). With n1..n3 the first
  three neighbours in RDKit's bond order, a CCW tag means det[x_n1 - x_c, x_n2 - x_c,
  x_n3 - x_c] > 0 and CW < 0 (checked against RDKit's own 3D perception in
  tests/test_conformers_graph.py); ``sign`` is +1 for CCW and -1 for CW. Distances cannot tell
  enantiomers apart, so the backbone also reads this signed volume (a pseudoscalar).

E/Z: RDKit's STEREOE / STEREOTRANS means the bond's two stereo atoms are trans, STEREOZ /
STEREOCIS cis; the other substituents follow (the other neighbour of one end is on the
opposite side).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem

CHARGES = (-1, 0, 1)
HYBRIDISATION = (Chem.HybridizationType.S, Chem.HybridizationType.SP,
                 Chem.HybridizationType.SP2, Chem.HybridizationType.SP3)
BOND_TYPES = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3,
              Chem.BondType.AROMATIC: 4}
MAX_DEGREE = 5
MAX_HOPS = 4
PAIR_DIM = 5 + MAX_HOPS + 2
_CIS = (Chem.BondStereo.STEREOZ, Chem.BondStereo.STEREOCIS)
_TRANS = (Chem.BondStereo.STEREOE, Chem.BondStereo.STEREOTRANS)
_TETRA = {Chem.ChiralType.CHI_TETRAHEDRAL_CCW: 1, Chem.ChiralType.CHI_TETRAHEDRAL_CW: -1}


class GraphError(ValueError):
    """A molecule that cannot be turned into a graph for this model; ``reason`` is short."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def node_dim(num_elements: int) -> int:
    """Number of node feature columns for a vocabulary of ``num_elements`` elements."""
    # elements, charge, aromatic, hybridisation (+ other), ring, degree 0..5+, stereocentre
    return num_elements + len(CHARGES) + 1 + (len(HYBRIDISATION) + 1) + 1 + (MAX_DEGREE + 1) + 1


@dataclass
class MolGraph:
    """A molecule's graph in compact integer form (see the module docstring).

    Shapes:
        elements [n] (vocabulary index), charge [n] (index into CHARGES), aromatic [n],
        hybrid [n] (index, len(HYBRIDISATION) = other), degree [n] (clipped at 5),
        ring [n], bond [n, n] (0 none .. 4 aromatic), hops [n, n] (1..4, 4 = >= 4 or
        disconnected; 0 on the diagonal), ez [n, n] (0 none, 1 cis, 2 trans),
        chiral [C, 5] (centre, n1, n2, n3, sign).
    """

    mol: Chem.Mol
    elements: np.ndarray
    charge: np.ndarray
    aromatic: np.ndarray
    hybrid: np.ndarray
    degree: np.ndarray
    ring: np.ndarray
    bond: np.ndarray
    hops: np.ndarray
    ez: np.ndarray
    chiral: np.ndarray
    name: str = ""
    conformers: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.elements)

    def node_features(self, num_elements: int) -> np.ndarray:
        """float32 [n, node_dim(num_elements)]."""
        eye = np.eye
        stereo = np.zeros((len(self), 1), np.float32)
        stereo[self.chiral[:, 0], 0] = 1.0
        return np.concatenate([
            eye(num_elements, dtype=np.float32)[self.elements],
            eye(len(CHARGES), dtype=np.float32)[self.charge],
            self.aromatic[:, None].astype(np.float32),
            eye(len(HYBRIDISATION) + 1, dtype=np.float32)[self.hybrid],
            self.ring[:, None].astype(np.float32),
            eye(MAX_DEGREE + 1, dtype=np.float32)[self.degree],
            stereo,
        ], 1)

    def pair_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Ordered pairs i != j in row-major order (the order of
        ``domains.molecules.egnn.fully_connected_edges`` for one molecule) and their
        features: (index int64 [2, n (n - 1)], float32 [n (n - 1), PAIR_DIM])."""
        n = len(self)
        ii, jj = np.nonzero(~np.eye(n, dtype=bool))
        feats = np.concatenate([
            np.eye(5, dtype=np.float32)[self.bond[ii, jj]],
            np.eye(MAX_HOPS, dtype=np.float32)[self.hops[ii, jj] - 1],
            np.eye(3, dtype=np.float32)[self.ez[ii, jj]][:, 1:],
        ], 1)
        return np.stack([ii, jj]).astype(np.int64), feats


def _graph_distances(n: int, bonds: list[tuple[int, int]]) -> np.ndarray:
    """Shortest-path lengths clipped to MAX_HOPS (BFS by boolean matrix powers)."""
    adj = np.zeros((n, n), bool)
    for i, j in bonds:
        adj[i, j] = adj[j, i] = True
    hops = np.full((n, n), MAX_HOPS, np.int64)
    reach = np.eye(n, dtype=bool)
    np.fill_diagonal(hops, 0)
    frontier = reach
    for d in range(1, MAX_HOPS):
        frontier = (frontier.astype(np.int64) @ adj.astype(np.int64) > 0) & ~reach
        hops[frontier] = d
        reach |= frontier
    return hops


def _stereo_pairs(mol: Chem.Mol, ez: np.ndarray) -> None:
    for b in mol.GetBonds():
        stereo = b.GetStereo()
        if stereo not in _CIS and stereo not in _TRANS:
            continue
        u, v = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        a, d = list(b.GetStereoAtoms())
        if mol.GetBondBetweenAtoms(a, u) is None:  # stereo atoms listed as (end, begin) side
            a, d = d, a
        cis = stereo in _CIS
        for x in mol.GetAtomWithIdx(u).GetNeighbors():
            if x.GetIdx() == v:
                continue
            for y in mol.GetAtomWithIdx(v).GetNeighbors():
                if y.GetIdx() == u:
                    continue
                same = (x.GetIdx() == a) == (y.GetIdx() == d)
                code = 1 if cis == same else 2
                ez[x.GetIdx(), y.GetIdx()] = ez[y.GetIdx(), x.GetIdx()] = code


def mol_to_graph(mol: Chem.Mol, vocabulary: dict[str, int], name: str = "") -> MolGraph:
    """A sanitised RDKit molecule with explicit hydrogens and assigned stereo -> MolGraph.

    Args:
        mol: the molecule; its atom order is kept.
        vocabulary: element symbol -> one-hot index.
        name: a label carried along (SMILES, SDF title...).

    Raises:
        GraphError: an element outside the vocabulary, a formal charge outside -1..+1, or a
            single atom.
    """
    n = mol.GetNumAtoms()
    if n < 2:
        raise GraphError("too_small", f"{n} atom(s); a conformer needs at least two")
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    outside = sorted({s for s in symbols if s not in vocabulary})
    if outside:
        raise GraphError("element", f"element(s) {', '.join(outside)} outside the model's "
                                    f"vocabulary {list(vocabulary)}")
    charges = [a.GetFormalCharge() for a in mol.GetAtoms()]
    if any(c not in CHARGES for c in charges):
        raise GraphError("charge", f"formal charge(s) {sorted(set(charges) - set(CHARGES))} "
                                   f"outside {list(CHARGES)}")
    hyb = {h: k for k, h in enumerate(HYBRIDISATION)}
    # hydrogens added by Chem.AddHs (SMILES inputs) carry UNSPECIFIED until hybridisation is
    # set again; sanitised training molecules have S: without this, every hydrogen of a
    # SMILES input had a feature no training molecule had (and refinement went wrong)
    typed = Chem.Mol(mol)
    typed.UpdatePropertyCache(strict=False)
    Chem.SetHybridization(typed)
    bond = np.zeros((n, n), np.int64)
    pairs = []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        bond[i, j] = bond[j, i] = BOND_TYPES.get(b.GetBondType(), 1)
        pairs.append((i, j))
    ez = np.zeros((n, n), np.int64)
    _stereo_pairs(mol, ez)
    chiral = []
    for a in mol.GetAtoms():
        sign = _TETRA.get(a.GetChiralTag())
        nbrs = [b.GetOtherAtomIdx(a.GetIdx()) for b in a.GetBonds()]
        if sign is not None and len(nbrs) >= 3:
            chiral.append([a.GetIdx(), *nbrs[:3], sign])
    ring = mol.GetRingInfo()
    return MolGraph(
        mol=mol,
        elements=np.array([vocabulary[s] for s in symbols], np.int64),
        charge=np.array([CHARGES.index(c) for c in charges], np.int64),
        aromatic=np.array([a.GetIsAromatic() for a in mol.GetAtoms()], np.int64),
        hybrid=np.array([hyb.get(a.GetHybridization(), len(HYBRIDISATION))
                         for a in typed.GetAtoms()], np.int64),
        degree=np.array([min(a.GetDegree(), MAX_DEGREE) for a in mol.GetAtoms()], np.int64),
        ring=np.array([ring.NumAtomRings(a.GetIdx()) > 0 for a in mol.GetAtoms()], np.int64),
        bond=bond, hops=_graph_distances(n, pairs), ez=ez,
        chiral=np.array(chiral, np.int64).reshape(-1, 5), name=name)


def with_stereo_from_3d(mol: Chem.Mol, conf_id: int = -1) -> Chem.Mol:
    """A copy of ``mol`` whose chiral tags and double-bond stereo are re-perceived from the
    3D coordinates of conformer ``conf_id`` (RDKit's AssignStereochemistryFrom3D)."""
    out = Chem.Mol(mol)
    for a in out.GetAtoms():
        a.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    for b in out.GetBonds():
        b.SetStereo(Chem.BondStereo.STEREONONE)
    Chem.AssignStereochemistryFrom3D(out, confId=conf_id)
    return out


def conformer(positions: np.ndarray) -> Chem.Conformer:
    """A 3D RDKit conformer holding ``positions`` [n, 3] in atom order."""
    conf = Chem.Conformer(len(positions))
    for k, p in enumerate(np.asarray(positions, dtype=np.float64).tolist()):
        conf.SetAtomPosition(k, p)
    conf.Set3D(True)
    return conf


def mol_from_xyz(positions: np.ndarray, atomic_numbers: np.ndarray, charge: int = 0) -> Chem.Mol:
    """Bonds and bond orders of a geometry (RDKit's DetermineBonds, the xyz2mol algorithm of
    Kim and Kim 2015), sanitised, stereo assigned from the geometry; atom order kept.

    Raises:
        GraphError("bonds", ...) when no consistent bond orders exist for the total charge.
    """
    from rdkit.Chem import rdDetermineBonds

    rw = Chem.RWMol()
    for z in np.asarray(atomic_numbers).tolist():
        rw.AddAtom(Chem.Atom(int(z)))
    rw.AddConformer(conformer(positions), assignId=True)
    try:
        rdDetermineBonds.DetermineBonds(rw, charge=charge)
        mol = rw.GetMol()
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError) as err:
        raise GraphError("bonds", f"DetermineBonds failed: {str(err).splitlines()[0]}") \
            from None
    return with_stereo_from_3d(mol)
