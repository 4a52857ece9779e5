"""The training range of a conformer model, and the check that a molecule lies inside it.

A model trained on QM9 (at most 29 atoms, 9 heavy atoms) has never seen a molecule of 33
atoms or a macrocycle, and nothing in its output says so: it still moves the atoms, often
for the worse (docs/conformers.md). So every conformer model stores the range of the
molecular graphs it was trained on in its sampling state (``training_range``), and the
command line and ``Pipeline.sample(smiles=...)`` refuse a molecule outside it unless told to
go on (``--allow-out-of-range`` / ``allow_out_of_range=True``, then with a warning).

The range (``graph_range``) is, over the training molecules: the largest atom count, heavy
atom count, ring count, rings in one ring system (fused or spiro rings sharing atoms) and
topological diameter (bonds on the longest shortest path between heavy atoms), and the sets
of elements, formal charges and ring sizes (smallest set of smallest rings) that occur.
Models saved before the range was stored and trained on the QM9 cache get ``QM9_RANGE``,
measured on QM9's whole training split (tests/test_conformers_scope.py re-measures it when
the cache is there).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from rdkit import Chem

#: the range of QM9's training split (EDM's split: of its 100,000 molecules, the 94,782 with
#: charge-0 bond orders from DetermineBonds), by ``graph_range``; its first 50,000, on which
#: the shipped conformers-qm9-refine trained, have the same range
QM9_RANGE: dict[str, Any] = {
    "molecules": 94782, "max_atoms": 29, "max_heavy_atoms": 9, "max_rings": 9,
    "max_system_rings": 9, "max_diameter": 8, "elements": ["C", "F", "H", "N", "O"],
    "charges": [-1, 0, 1], "ring_sizes": [3, 4, 5, 6, 7, 8, 9], "source": "QM9 training split",
}

_MAX_KEYS = (("max_atoms", "atoms", "atoms"), ("max_heavy_atoms", "heavy_atoms", "heavy atoms"),
             ("max_rings", "rings", "rings"),
             ("max_system_rings", "system_rings", "rings in one ring system"),
             ("max_diameter", "diameter", "bonds between its farthest heavy atoms"))
_SET_KEYS = (("elements", "elements", "element"), ("charges", "charges", "formal charge"),
             ("ring_sizes", "ring_sizes", "ring size"))


class OutOfRangeError(ValueError):
    """A molecule outside the training range of the model asked to handle it."""


class OutOfRangeWarning(UserWarning):
    """A molecule outside the model's training range, handled because it was allowed."""


def graph_features(mol: Chem.Mol) -> dict[str, Any]:
    """What ``graph_range`` takes the maximum or the union of, for one molecule."""
    rings = [set(r) for r in mol.GetRingInfo().AtomRings()]
    systems: list[set[int]] = []  # rings sharing atoms merge into one system
    counts: list[int] = []
    for ring in rings:
        hit = [k for k, s in enumerate(systems) if s & ring]
        merged, n = set(ring), 1
        for k in reversed(hit):
            merged |= systems.pop(k)
            n += counts.pop(k)
        systems.append(merged)
        counts.append(n)
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    dist = Chem.GetDistanceMatrix(mol)
    reach = [d for i in heavy for j in heavy if (d := dist[i][j]) < 1e6]
    return {"atoms": mol.GetNumAtoms(), "heavy_atoms": len(heavy), "rings": len(rings),
            "system_rings": max(counts, default=0),
            "diameter": int(max(reach, default=0)),
            "elements": {a.GetSymbol() for a in mol.GetAtoms()},
            "charges": {a.GetFormalCharge() for a in mol.GetAtoms()},
            "ring_sizes": {len(r) for r in rings}}


def graph_range(mols: Iterable[Chem.Mol], source: str = "") -> dict[str, Any]:
    """The training range of ``mols`` (RDKit molecules with explicit hydrogens), JSON-able."""
    out: dict[str, Any] = {"molecules": 0, **{k: 0 for k, _, _ in _MAX_KEYS},
                           **{k: set() for k, _, _ in _SET_KEYS}}
    for mol in mols:
        f = graph_features(mol)
        out["molecules"] += 1
        for key, feat, _ in _MAX_KEYS:
            out[key] = max(out[key], f[feat])
        for key, feat, _ in _SET_KEYS:
            out[key] |= f[feat]
    for key, _, _ in _SET_KEYS:
        out[key] = sorted(out[key])
    if source:
        out["source"] = source
    return out


def out_of_range(mol: Chem.Mol, rng: dict[str, Any] | None) -> list[str]:
    """What about ``mol`` lies outside ``rng`` (empty when inside, or when no range is
    known), e.g. ``["33 atoms (trained on <= 29)", "ring size 10 (trained on 3, 5, 6)"]``."""
    if not rng:
        return []
    f = graph_features(mol)
    found = []
    for key, feat, words in _MAX_KEYS:
        if key in rng and f[feat] > rng[key]:
            found.append(f"{f[feat]} {words} (trained on <= {rng[key]})")
    for key, feat, word in _SET_KEYS:
        if key not in rng:
            continue
        extra = sorted(f[feat] - set(rng[key]))
        if extra:
            seen = ", ".join(map(str, rng[key])) or "none"
            found.append(f"{word}{'s' if len(extra) > 1 else ''} "
                         f"{', '.join(map(str, extra))} (trained on {seen})")
    return found


def range_message(name: str, reasons: list[str], model: str = "the model") -> str:
    """The one line that names a molecule and what of it lies outside the range."""
    return f"{name}: outside {model}'s training range: {'; '.join(reasons)}"


def check_graphs(graphs: Iterable[Any], rng: dict[str, Any] | None, allow: bool,
                 model: str = "the model") -> None:
    """Raise an ``OutOfRangeError`` naming every graph (``.mol``, ``.name``) outside ``rng``,
    or with ``allow`` warn (``OutOfRangeWarning``) and go on."""
    lines = [range_message(g.name, r, model) for g in graphs
             if (r := out_of_range(g.mol, rng))]
    if not lines:
        return
    if allow:
        for line in lines:
            warnings.warn(line, OutOfRangeWarning, stacklevel=3)
        return
    raise OutOfRangeError("; ".join(lines) + " (allow_out_of_range=True to sample anyway)")
