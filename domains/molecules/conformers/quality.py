"""Physical sanity of conformers, next to COV/MAT: MMFF94 energy and local geometry.

COV/MAT compare heavy-atom RMSDs to references and hardly see a stretched bond or a
clashing hydrogen; a refiner can win on RMSD and still make worse molecules. Two figures per
conformer, both from RDKit's MMFF94 (Halgren 1996), make that visible:

* ``energy``: the MMFF94 energy of the conformer as it is (kcal/mol; no relaxation).
  Energies of different molecules are not comparable, so a method's figure is the median
  over molecules of each molecule's median, and methods are compared on the same molecules.
* ``bond_error``: the mean absolute difference (A) between the conformer's bond lengths
  (every bond, hydrogens included) and those of the same conformer after MMFF94
  minimisation, i.e. how far its local geometry is from the nearest force-field minimum.

A molecule MMFF has no parameters for gets NaN (and is left out of the medians).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem

from domains.molecules.conformers.graph import conformer


def conformer_quality(mol: Chem.Mol, confs: Sequence[np.ndarray],
                      max_iters: int = 2000) -> list[tuple[float, float]]:
    """(MMFF94 energy in kcal/mol, bond-length error in A against the MMFF-minimised
    geometry) of every conformer [n, 3] of ``mol`` (explicit hydrogens, atom order of the
    conformers); (nan, nan) for each when MMFF94 has no parameters for the molecule."""
    if not len(confs):
        return []
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    with rdBase.BlockLogs():
        props = AllChem.MMFFGetMoleculeProperties(m)
    if props is None:
        return [(math.nan, math.nan)] * len(confs)
    bonds = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in m.GetBonds()],
                     np.int64).reshape(-1, 2)
    out = []
    for pos in confs:
        pos = np.asarray(pos, dtype=np.float64)
        cid = m.AddConformer(conformer(pos), assignId=True)
        ff = AllChem.MMFFGetMoleculeForceField(m, props, confId=cid)
        energy = float(ff.CalcEnergy())
        ff.Minimize(maxIts=max_iters)
        relaxed = np.asarray(ff.Positions(), dtype=np.float64).reshape(-1, 3)
        m.RemoveConformer(cid)

        def lengths(x):
            return np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1)

        err = float(np.abs(lengths(pos) - lengths(relaxed)).mean()) if len(bonds) else 0.0
        out.append((energy, err))
    return out


def molecule_quality(mol: Chem.Mol, confs: Sequence[np.ndarray]) -> dict[str, float]:
    """One molecule's ``energy`` (median over its conformers, kcal/mol) and ``bond_error``
    (mean over its conformers, A); NaN for both without conformers or MMFF parameters."""
    values = conformer_quality(mol, confs)
    if not values or math.isnan(values[0][0]):
        return {"energy": math.nan, "bond_error": math.nan}
    return {"energy": float(np.median([e for e, _ in values])),
            "bond_error": float(np.mean([b for _, b in values]))}


def summarise(per_mol: Sequence[dict[str, float]]) -> dict[str, float]:
    """A method's row entries: ``mmff_energy_median`` (median over molecules of the
    per-molecule median energy) and ``bond_error_mean`` / ``bond_error_median`` over the
    molecules that have a value (``quality_molecules`` of them)."""
    e = np.array([q["energy"] for q in per_mol if not math.isnan(q["energy"])])
    b = np.array([q["bond_error"] for q in per_mol if not math.isnan(q["bond_error"])])
    nan = math.nan
    return {"mmff_energy_median": float(np.median(e)) if len(e) else nan,
            "bond_error_mean": float(b.mean()) if len(b) else nan,
            "bond_error_median": float(np.median(b)) if len(b) else nan,
            "quality_molecules": int(len(e))}


def paired_quality(model: Sequence[dict[str, float]],
                   base: Sequence[dict[str, float]]) -> dict[str, float]:
    """The model against the baseline on the molecules both have values for: median of the
    per-molecule differences (model minus baseline) and on how many the model is worse."""
    pairs = [(m, b) for m, b in zip(model, base)
             if not math.isnan(m["energy"]) and not math.isnan(b["energy"])]
    if not pairs:
        return {"quality_pairs": 0}
    de = np.array([m["energy"] - b["energy"] for m, b in pairs])
    db = np.array([m["bond_error"] - b["bond_error"] for m, b in pairs])
    return {"quality_pairs": len(pairs),
            "energy_diff_median": float(np.median(de)), "energy_worse": int((de > 0).sum()),
            "bond_error_diff_median": float(np.median(db)),
            "bond_error_worse": int((db > 0).sum())}


def paired_quality_line(p: dict[str, float], model: str, baseline: str) -> str:
    """One printed line of ``paired_quality``."""
    if not p.get("quality_pairs"):
        return f"MMFF94, {model} minus {baseline}: no molecule with MMFF parameters in both"
    n = p["quality_pairs"]
    return (f"MMFF94, {model} minus {baseline} on the same {n} molecules: energy median "
            f"{p['energy_diff_median']:+.1f} kcal/mol (higher on {p['energy_worse']} of {n}); "
            f"bond-length error median {p['bond_error_diff_median']:+.3f} A (worse on "
            f"{p['bond_error_worse']} of {n})")
