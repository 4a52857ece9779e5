"""EDM's sample-quality metrics for 3D molecules (Hoogeboom et al. 2022), same definitions.

Bonds are inferred from interatomic distances alone: a pair is bonded with order 1, 2 or 3
when its distance (in pm) is below the typical single / double / triple bond length of that
element pair plus a margin of 10 / 5 / 3 pm (the margins EDM tuned on QM9). The length
tables are EDM's (from wiredchemist.com and chemistry-reference.com), entered here as
(pair, length) rows and made symmetric: EDM lists the C-S double bond only from the C side,
and pairs without a single-bond length give "no bond" where EDM's QM9 path raises a
KeyError. Neither matters for H, C, N, O, F, where the tables are complete and symmetric.

* **atom stability**: an atom is stable when the sum of its inferred bond orders equals its
  allowed valence (H 1, C 4, N 3, O 2, F 1; EDM's table has no charged states in its QM9
  path, P and Bi accept 3 or 5, Hg 1 or 2). Pooled over all atoms of all molecules,
  hydrogens included.
* **molecule stability**: the fraction of molecules whose atoms are all stable.
* **validity**: the molecule with the inferred bonds (explicit H atoms, no charges) passes
  RDKit sanitisation; its SMILES is then the canonical SMILES of its largest fragment.
* **uniqueness**: distinct SMILES over valid molecules; **novelty**: unique SMILES absent
  from the training SMILES (EDM derives those the same way, from the training geometries;
  see ``domains.molecules.qm9.QM9Cache.train_smiles``); **valid_and_unique** = validity x
  uniqueness, EDM's "V*U" column.

Distances and bond orders are computed for whole batches of equal-size molecules at once;
only the RDKit step loops in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from rdkit import Chem, rdBase

# typical single / double / triple bond lengths in pm, "A B length" rows (symmetric)
_SINGLE = """
H H 74; H C 109; H N 101; H O 96; H F 92; H B 119; H Si 148; H P 144; H As 152; H S 134;
H Cl 127; H Br 141; H I 161; C C 154; C N 147; C O 143; C F 135; C Si 185; C P 184;
C S 182; C Cl 177; C Br 194; C I 214; N N 145; N O 140; N F 136; N Cl 175; N Br 214;
N S 168; N I 222; N P 177; O O 148; O F 142; O Br 172; O S 151; O P 163; O Si 163;
O Cl 164; O I 194; F F 142; F S 158; F Si 160; F Cl 166; F Br 178; F P 156; F I 187;
B Cl 175; Si Si 233; Si S 200; Si Cl 202; Si Br 215; Si I 243; Cl Cl 199; Cl P 203;
Cl S 207; Cl Br 214; S S 204; S Br 225; S P 210; S I 234; Br Br 228; Br P 222; P P 221;
I I 266
"""
_DOUBLE = "C C 134; C N 129; C O 120; C S 160; N N 125; N O 121; O O 121; O P 150; P S 186"
_TRIPLE = "C C 120; C N 116; C O 113; N N 110"
MARGINS_PM = (10.0, 5.0, 3.0)

#: allowed valence (sum of bond orders) per element; a tuple means any of these
ALLOWED_VALENCE: dict[str, int | tuple[int, ...]] = {
    "H": 1, "C": 4, "N": 3, "O": 2, "F": 1, "B": 3, "Al": 3, "Si": 4, "P": (3, 5), "S": 4,
    "Cl": 1, "As": 3, "Br": 1, "I": 1, "Hg": (1, 2), "Bi": (3, 5),
}


def _parse(table: str) -> dict[tuple[str, str], float]:
    out = {}
    for row in table.replace("\n", " ").split(";"):
        if row.strip():
            a, b, length = row.split()
            out[a, b] = out[b, a] = float(length)
    return out


SINGLE_PM, DOUBLE_PM, TRIPLE_PM = _parse(_SINGLE), _parse(_DOUBLE), _parse(_TRIPLE)
#: elements the metrics accept (those with at least one tabulated bond length)
ELEMENTS: tuple[str, ...] = tuple(sorted({a for a, _ in SINGLE_PM}))
_INDEX = {s: i for i, s in enumerate(ELEMENTS)}
_MAX_VALENCE = 128


def _threshold_matrix(table: dict[tuple[str, str], float], margin: float) -> np.ndarray:
    """[E, E] thresholds in Angstrom (length + margin); -inf where the pair has no entry."""
    m = np.full((len(ELEMENTS), len(ELEMENTS)), -np.inf)
    for (a, b), length in table.items():
        m[_INDEX[a], _INDEX[b]] = (length + margin) / 100.0
    return m


_T1, _T2, _T3 = (_threshold_matrix(t, mg) for t, mg in zip((SINGLE_PM, DOUBLE_PM, TRIPLE_PM),
                                                             MARGINS_PM))
_ALLOWED = np.zeros((len(ELEMENTS), _MAX_VALENCE + 1), dtype=bool)
for _s, _v in ALLOWED_VALENCE.items():
    if _s in _INDEX:
        _ALLOWED[_INDEX[_s], list(_v) if isinstance(_v, tuple) else _v] = True
_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def bond_order(sym1: str, sym2: str, distance: float) -> int:
    """EDM's bond order for one atom pair.

    Args:
        sym1: element symbol of the first atom, e.g. ``"C"``.
        sym2: element symbol of the second atom.
        distance: interatomic distance in Angstrom (compared in pm, i.e. times 100).

    Returns:
        0 (no bond), 1, 2 or 3. Pairs without a tabulated single-bond length give 0.
    """
    d = 100.0 * float(distance)
    single = SINGLE_PM.get((sym1, sym2))
    if single is None or not d < single + MARGINS_PM[0]:
        return 0
    double = DOUBLE_PM.get((sym1, sym2))
    if double is None or not d < double + MARGINS_PM[1]:
        return 1
    triple = TRIPLE_PM.get((sym1, sym2))
    if triple is None or not d < triple + MARGINS_PM[2]:
        return 2
    return 3


def element_indices(symbols: Sequence[str]) -> np.ndarray:
    """Map element symbols to rows of the bond tables (ValueError for unknown ones)."""
    try:
        return np.fromiter((_INDEX[s] for s in symbols), dtype=np.int64, count=len(symbols))
    except KeyError as e:
        raise ValueError(f"element {e.args[0]!r} is not in EDM's bond tables "
                         f"(known: {', '.join(ELEMENTS)})") from None


def bond_order_matrix(positions: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Bond orders of every pair, for one molecule or a batch of equal-size molecules.

    Args:
        positions: [..., n, 3] coordinates in Angstrom.
        types: [..., n] indices into ``ELEMENTS`` (see ``element_indices``).

    Returns:
        [..., n, n] int8 bond orders (0 on the diagonal), symmetric.
    """
    pos = np.asarray(positions, dtype=np.float64)
    diff = pos[..., :, None, :] - pos[..., None, :, :]
    dist = np.sqrt((diff * diff).sum(-1))
    ti, tj = types[..., :, None], types[..., None, :]
    b1 = dist < _T1[ti, tj]
    b2 = b1 & (dist < _T2[ti, tj])
    b3 = b2 & (dist < _T3[ti, tj])
    order = b1.astype(np.int8) + b2 + b3
    n = pos.shape[-2]
    order[..., np.arange(n), np.arange(n)] = 0
    return order


def _stable_atoms(order: np.ndarray, types: np.ndarray) -> np.ndarray:
    valence = np.minimum(order.sum(-1, dtype=np.int64), _MAX_VALENCE)
    return _ALLOWED[types, valence]


def check_stability(positions: np.ndarray, symbols: Sequence[str]) -> tuple[bool, int, int]:
    """EDM's stability check of one molecule.

    Args:
        positions: [n, 3] coordinates in Angstrom.
        symbols: n element symbols (hydrogens included; they count as atoms).

    Returns:
        (molecule_stable, n_stable_atoms, n_atoms).
    """
    types = element_indices(symbols)
    stable = _stable_atoms(bond_order_matrix(positions, types), types)
    return bool(stable.all()), int(stable.sum()), len(symbols)


def infer_bonds(positions: np.ndarray, symbols: Sequence[str]) -> list[tuple[int, int, int]]:
    """The bonds EDM infers from distances, e.g. for writing an SDF file.

    Args:
        positions: [n, 3] coordinates in Angstrom.
        symbols: n element symbols.

    Returns:
        (i, j, order) with i < j and order 1, 2 or 3.
    """
    order = bond_order_matrix(positions, element_indices(symbols))
    ii, jj = np.nonzero(np.triu(order, 1))
    return list(zip(ii.tolist(), jj.tolist(), order[ii, jj].tolist()))


def _atom(symbol: str) -> Chem.Atom:
    atom = _ATOMS.get(symbol)
    if atom is None:
        atom = _ATOMS[symbol] = Chem.Atom(symbol)
    return atom


_ATOMS: dict[str, Chem.Atom] = {}


def _rwmol(symbols: Sequence[str], bonds: Iterable[tuple[int, int, int]]) -> Chem.RWMol:
    mol = Chem.RWMol()
    for s in symbols:
        mol.AddAtom(_atom(s))           # AddAtom copies the prototype
    for i, j, k in bonds:
        mol.AddBond(i, j, _BOND_TYPES[k])
    return mol


def build_rdkit_mol(positions: np.ndarray, symbols: Sequence[str],
                    order: np.ndarray | None = None) -> Chem.RWMol:
    """The RDKit molecule EDM builds: explicit atoms, bonds from the distance tables.

    Args:
        positions: [n, 3] coordinates in Angstrom.
        symbols: n element symbols.
        order: optional precomputed [n, n] bond orders (``bond_order_matrix``).

    Returns:
        An unsanitised ``RWMol`` without charges or conformer; bonds are added in EDM's
        order (i ascending, then j < i ascending).
    """
    if order is None:
        order = bond_order_matrix(positions, element_indices(symbols))
    ii, jj = np.nonzero(np.tril(order, -1))
    return _rwmol(symbols, zip(ii.tolist(), jj.tolist(), order[ii, jj].tolist()))


def mol_to_smiles(mol: Chem.Mol) -> str | None:
    """Sanitise in place and return the canonical SMILES, or None if sanitisation fails."""
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError):
        return None
    return Chem.MolToSmiles(mol)


def valid_smiles(mol: Chem.Mol) -> str | None:
    """EDM's validity test: sanitise, keep the largest fragment, return its SMILES.

    Args:
        mol: an unsanitised molecule (modified in place).

    Returns:
        The canonical SMILES of the largest fragment, or None if the molecule is invalid.
    """
    whole = mol_to_smiles(mol)
    if whole is None or len(Chem.GetMolFrags(mol)) == 1:
        return whole        # one fragment: re-sanitising its copy gives the same SMILES
    frags = Chem.GetMolFrags(mol, asMols=True)
    largest = max(frags, key=lambda m: m.GetNumAtoms())     # first of the largest, as EDM
    return mol_to_smiles(largest)


def _batches(molecules: Sequence[tuple[np.ndarray, Sequence[str]]]):
    """Yield (indices, positions [m, n, 3], types [m, n]) for groups of equal size."""
    sizes = np.array([len(m[1]) for m in molecules], dtype=np.int64)
    for n in np.unique(sizes):
        idx = np.nonzero(sizes == n)[0]
        for start in range(0, len(idx), 2048):
            chunk = idx[start:start + 2048]
            pos = np.stack([np.asarray(molecules[k][0], dtype=np.float64) for k in chunk])
            types = np.stack([element_indices(molecules[k][1]) for k in chunk])
            yield chunk, pos.reshape(len(chunk), n, 3), types.reshape(len(chunk), n)


def analyse(molecules: Sequence[tuple[np.ndarray, Sequence[str]]],
            smiles: str | None = "largest") -> dict[str, np.ndarray | list]:
    """Per-molecule stability counts and SMILES (batched).

    Args:
        molecules: (positions [n, 3] in Angstrom, symbols) pairs.
        smiles: ``"largest"``: EDM's validity SMILES (largest fragment, ``valid_smiles``);
            ``"whole"``: the SMILES of the whole molecule (how EDM lists its training
            set); None: skip RDKit.

    Returns:
        dict with ``stable`` (bool [N]), ``n_stable`` and ``n_atoms`` (int [N]) and, unless
        ``smiles`` is None, ``smiles`` (list of str, or None where sanitisation fails).
    """
    if smiles not in ("largest", "whole", None):
        raise ValueError(f"smiles must be 'largest', 'whole' or None, not {smiles!r}")
    to_smiles = valid_smiles if smiles == "largest" else mol_to_smiles
    n_mol = len(molecules)
    stable = np.zeros(n_mol, dtype=bool)
    n_stable = np.zeros(n_mol, dtype=np.int64)
    n_atoms = np.zeros(n_mol, dtype=np.int64)
    found: list[str | None] = [None] * n_mol
    from diffplat.progress import bar

    progress = bar(total=n_mol, desc="bonds, valences, SMILES", unit="mol")
    with rdBase.BlockLogs(), progress:  # RDKit's sanitisation messages, one per invalid
        for chunk, pos, types in _batches(molecules):
            progress.update(len(chunk))
            order = bond_order_matrix(pos, types)
            ok = _stable_atoms(order, types)
            stable[chunk] = ok.all(-1)
            n_stable[chunk] = ok.sum(-1)
            n_atoms[chunk] = types.shape[1]
            if smiles is not None:
                n = types.shape[1]
                b, ii, jj = np.nonzero(order * np.tri(n, n, -1, dtype=np.int8))
                kk = order[b, ii, jj]
                cuts = np.searchsorted(b, np.arange(len(chunk) + 1)).tolist()
                ii, jj, kk = ii.tolist(), jj.tolist(), kk.tolist()
                for row, k in enumerate(chunk.tolist()):
                    lo, hi = cuts[row], cuts[row + 1]
                    mol = _rwmol(molecules[k][1], zip(ii[lo:hi], jj[lo:hi], kk[lo:hi]))
                    found[k] = to_smiles(mol)
    out: dict[str, np.ndarray | list] = {"stable": stable, "n_stable": n_stable,
                                         "n_atoms": n_atoms}
    if smiles is not None:
        out["smiles"] = found
    return out


def validity_uniqueness_novelty(smiles: Sequence[str | None],
                                train_smiles: Iterable[str] | None = None) -> dict[str, float]:
    """EDM's validity, uniqueness and novelty from per-molecule validity SMILES.

    Args:
        smiles: one entry per generated molecule: its ``valid_smiles`` or None if invalid.
        train_smiles: the training set's SMILES (derived the EDM way); omit to skip novelty.

    Returns:
        dict with ``validity`` (valid / all), ``uniqueness`` (distinct / valid),
        ``valid_and_unique`` (their product) and, with ``train_smiles``, ``novelty``
        (distinct valid SMILES not in the training set / distinct valid SMILES). Ratios with
        an empty denominator are 0, as in EDM.
    """
    valid = [s for s in smiles if s is not None]
    unique = set(valid)
    validity = len(valid) / len(smiles) if len(smiles) else 0.0
    uniqueness = len(unique) / len(valid) if valid else 0.0
    out = {"validity": validity, "uniqueness": uniqueness,
           "valid_and_unique": validity * uniqueness}
    if train_smiles is not None:
        train = train_smiles if isinstance(train_smiles, set | frozenset) else set(train_smiles)
        out["novelty"] = (sum(s not in train for s in unique) / len(unique)) if unique else 0.0
    return out


def edm_metrics(molecules: Sequence[tuple[np.ndarray, Sequence[str]]],
                train_smiles: Iterable[str] | None = None) -> dict[str, float]:
    """All of EDM's metrics for a set of molecules.

    Args:
        molecules: (positions [n, 3] in Angstrom, element symbols) pairs, hydrogens explicit.
        train_smiles: training SMILES derived the EDM way (e.g. ``QM9Cache.train_smiles()``);
            when given, ``novelty`` is reported too.

    Returns:
        dict of fractions in [0, 1]: ``atom_stability`` (pooled over all atoms),
        ``mol_stability``, ``validity``, ``uniqueness``, ``valid_and_unique`` and optionally
        ``novelty``; plus ``n_molecules``.
    """
    if not len(molecules):
        raise ValueError("edm_metrics needs at least one molecule")
    res = analyse(molecules, smiles="largest")
    out = {"atom_stability": float(res["n_stable"].sum() / res["n_atoms"].sum()),
           "mol_stability": float(res["stable"].mean())}
    out.update(validity_uniqueness_novelty(res["smiles"], train_smiles))
    out["n_molecules"] = len(molecules)
    return out
