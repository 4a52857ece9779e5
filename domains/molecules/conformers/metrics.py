"""Conformer-ensemble metrics: coverage and matching (GeoDiff, Xu et al. 2022, eqs. 14-15;
Torsional Diffusion, Jing et al. 2022, sec. 5) and stereochemistry agreement.

For one molecule with K reference conformers S_r and generated ones S_g (2K by the GeoDiff
protocol), with RMSD the heavy-atom RMSD after optimal alignment over the symmetry-equivalent
atom mappings (RDKit ``rdMolAlign.GetBestRMS`` on the molecules after ``RemoveHs``):

* COV-R = |{C in S_r : min_{C' in S_g} RMSD(C, C') <= delta}| / |S_r|   (recall: coverage)
* MAT-R = mean_{C in S_r} min_{C' in S_g} RMSD(C, C')                   (recall: matching)
* COV-P, MAT-P: the same with S_r and S_g swapped (precision).

Coverage counts ``<=`` delta, as GeoDiff's code does. Per-molecule values are summarised by
their mean and median over molecules. delta is 0.5 A on QM9 and 1.25 A on drug-like sets
(GEOM-Drugs), the thresholds of both papers.

Stereochemistry: a generated conformer matches its input graph when every stereo element the
graph specifies (tetrahedral centres, double bonds) gets the same CIP label (R/S, E/Z) after
RDKit re-perceives the stereo from the conformer's coordinates (AssignStereochemistryFrom3D);
elements the graph leaves unspecified are free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdCIPLabeler, rdMolAlign

from domains.molecules.conformers.graph import conformer, with_stereo_from_3d

METRICS = ("cov_r", "mat_r", "cov_p", "mat_p")


def _heavy_template(mol: Chem.Mol) -> tuple[Chem.Mol, list[int]]:
    """The molecule without hydrogens and without conformers, and the original index of each
    remaining atom (RemoveHs keeps the order, the property makes that explicit)."""
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    for a in m.GetAtoms():
        a.SetIntProp("orig_idx", a.GetIdx())
    params = Chem.RemoveHsParameters()
    params.removeDefiningBondStereo = True
    params.removeWithWedgedBond = True
    heavy = Chem.RemoveHs(m, params, sanitize=False)
    return heavy, [a.GetIntProp("orig_idx") for a in heavy.GetAtoms()]


def rmsd_matrix(mol: Chem.Mol, refs: Sequence[np.ndarray],
                gens: Sequence[np.ndarray]) -> np.ndarray:
    """Heavy-atom, symmetry-aware RMSD (Angstrom) of every (reference, generated) pair.

    Args:
        mol: the molecule (hydrogens may be present); its atom order is that of the arrays.
        refs: K reference conformers, each [n, 3] in ``mol``'s atom order.
        gens: G generated conformers, each [n, 3].

    Returns:
        float64 [K, G].
    """
    heavy, idx = _heavy_template(mol)
    for pos in [*refs, *gens]:
        heavy.AddConformer(conformer(np.asarray(pos)[idx]), assignId=True)
    k_refs = len(refs)
    out = np.zeros((k_refs, len(gens)))
    if heavy.GetNumAtoms() < 2:  # one heavy atom: nothing to compare after alignment
        return out
    with rdBase.BlockLogs():
        for r in range(k_refs):
            for g in range(len(gens)):
                # GetBestRMS moves the probe conformer onto the reference; the RMSD after an
                # optimal alignment does not depend on where the probe started
                out[r, g] = rdMolAlign.GetBestRMS(heavy, heavy, prbId=k_refs + g, refId=r)
    return out


def coverage_matching(rmsd: np.ndarray, delta: float) -> dict[str, float]:
    """COV-R, MAT-R, COV-P, MAT-P of one molecule from its [K, G] RMSD matrix.

    Coverage as a fraction in [0, 1] (``<= delta``), matching in Angstrom.
    """
    rmsd = np.asarray(rmsd, dtype=np.float64)
    if rmsd.ndim != 2 or 0 in rmsd.shape:
        raise ValueError(f"need a non-empty [K, G] RMSD matrix, got shape {rmsd.shape}")
    to_gen, to_ref = rmsd.min(1), rmsd.min(0)
    return {"cov_r": float((to_gen <= delta).mean()), "mat_r": float(to_gen.mean()),
            "cov_p": float((to_ref <= delta).mean()), "mat_p": float(to_ref.mean())}


def summarise(per_molecule: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and median over molecules: ``cov_r_mean`` (%), ``mat_r_median`` (A), ..."""
    out: dict[str, float] = {}
    for key in METRICS:
        values = np.array([m[key] for m in per_molecule], dtype=np.float64)
        scale = 100.0 if key.startswith("cov") else 1.0
        out[f"{key}_mean"] = float(values.mean() * scale) if len(values) else float("nan")
        out[f"{key}_median"] = float(np.median(values) * scale) if len(values) else float("nan")
    return out


def stereo_labels(mol: Chem.Mol) -> dict[tuple[str, int], str]:
    """CIP labels of the stereo elements ``mol`` specifies: {("atom", i): "R"|"S"|...,
    ("bond", j): "E"|"Z"} (RDKit's new CIP labeller on a copy)."""
    m = Chem.Mol(mol)
    with rdBase.BlockLogs():
        Chem.AssignStereochemistry(m, cleanIt=True, force=True)
        rdCIPLabeler.AssignCIPLabels(m)
    out = {}
    for a in m.GetAtoms():
        if a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED and a.HasProp("_CIPCode"):
            out[("atom", a.GetIdx())] = a.GetProp("_CIPCode")
    for b in m.GetBonds():
        if b.GetStereo() != Chem.BondStereo.STEREONONE and b.HasProp("_CIPCode"):
            out[("bond", b.GetIdx())] = b.GetProp("_CIPCode")
    return out


def stereo_matches(mol: Chem.Mol, confs: Sequence[np.ndarray],
                   wanted: dict[tuple[str, int], str] | None = None) -> list[bool]:
    """For each conformer: do the stereo labels perceived from its 3D coordinates agree with
    every label the graph ``mol`` specifies? (True for all when it specifies none.)"""
    wanted = stereo_labels(mol) if wanted is None else wanted
    if not wanted:
        return [True] * len(confs)
    out = []
    base = Chem.Mol(mol)
    base.RemoveAllConformers()
    for pos in confs:
        m = Chem.Mol(base)
        m.AddConformer(conformer(pos), assignId=True)
        with rdBase.BlockLogs():
            got = stereo_labels(with_stereo_from_3d(m))
        out.append(all(got.get(key) == label for key, label in wanted.items()))
    return out


def ensemble_metrics(mols: Sequence[Chem.Mol], refs: Sequence[Sequence[np.ndarray]],
                     gens: Sequence[Sequence[np.ndarray]], delta: float) -> dict[str, float]:
    """The table row for a set of molecules: COV/MAT mean and median, stereo agreement.

    Args:
        mols: the molecules (graphs with their stereo tags).
        refs: per molecule, its K reference conformers.
        gens: per molecule, the generated conformers (empty: the generator failed on it;
            such molecules are counted in ``failed`` and left out of the averages).
        delta: coverage threshold in Angstrom.

    Returns:
        cov_r_mean, cov_r_median, mat_r_mean, ... (coverage in %, matching in A),
        stereo_match (% of generated conformers of molecules with specified stereo whose
        3D stereo agrees), stereo_molecules, molecules, failed, conformers, delta.
    """
    per_mol, stereo = [], []
    n_stereo = failed = n_confs = 0
    for mol, r, g in zip(mols, refs, gens):
        if len(g) == 0:
            failed += 1
            continue
        n_confs += len(g)
        per_mol.append(coverage_matching(rmsd_matrix(mol, r, g), delta))
        wanted = stereo_labels(mol)
        if wanted:
            n_stereo += 1
            stereo += stereo_matches(mol, g, wanted)
    out = summarise(per_mol)
    out.update(stereo_match=float(100 * np.mean(stereo)) if stereo else float("nan"),
               stereo_molecules=n_stereo, molecules=len(per_mol), failed=failed,
               conformers=n_confs, delta=float(delta))
    return out
