"""Conformer-ensemble metrics: coverage and matching (GeoDiff, Xu et al. 2022, eqs. 14-15;
Torsional Diffusion, Jing et al. 2022, sec. 5) and stereochemistry agreement.

For one molecule with K reference conformers S_r and generated ones S_g (2K by the GeoDiff
protocol), with RMSD the heavy-atom RMSD after optimal alignment over the symmetry-equivalent
atom mappings (RDKit ``rdMolAlign.GetBestRMS`` on the molecules after ``RemoveHs``):

* COV-R = |{C in S_r : min_{C' in S_g} RMSD(C, C') < delta}| / |S_r|   (recall: coverage)
* MAT-R = mean_{C in S_r} min_{C' in S_g} RMSD(C, C')                  (recall: matching)
* COV-P, MAT-P: the same with S_r and S_g swapped (precision).

Two scorings (``SCORINGS``); ``"td"`` is the default:

* ``"td"``: Torsional Diffusion's ``evaluate_confs.py`` (gcorso/torsional-diffusion, commit
  5f713b4): coverage counts RMSD strictly below delta (``rmsd.min(axis=1) < threshold``);
  hydrogens are removed with RDKit's default ``Chem.RemoveHs``, which keeps the ones that
  define double-bond stereo (the H of an E/Z imine ``[H]/N=C/C``); a molecule for which the
  method produced no conformer is a "model failure" and adds 0 to COV-R and COV-P (their mean
  and median run over every molecule), while MAT-R and MAT-P are averaged (``np.nanmean``)
  over the molecules that have conformers only. A NaN RMSD (TD's "additional failure") counts
  as not covered and makes that molecule's MAT NaN, left out of the MAT averages.
* ``"legacy"``: diffplat's scoring before issue #16: ``<=`` delta, as GeoDiff's
  ``utils/evaluation/covmat.py`` counts it; every hydrogen removed, also the stereo-defining
  ones; molecules without conformers left out of every average and only counted in
  ``failed`` (which flatters the method that fails more).

Per-molecule values are summarised by their mean and median over molecules. delta is 0.5 A
on QM9 and 0.75 A on GEOM-Drugs in Torsional Diffusion (1.25 A on Drugs in GeoDiff).

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
SCORINGS = ("td", "legacy")


def check_scoring(scoring: str) -> str:
    """``scoring`` if it is one of ``SCORINGS``; a one-line error naming them otherwise."""
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; choose from {', '.join(SCORINGS)}")
    return scoring


def _heavy_template(mol: Chem.Mol, scoring: str = "td") -> tuple[Chem.Mol, list[int]]:
    """The molecule without hydrogens and without conformers, and the original index of each
    remaining atom (RemoveHs keeps the order, the property makes that explicit).

    ``"td"``: RDKit's default ``RemoveHs`` parameters, as Torsional Diffusion's
    ``Chem.RemoveHs(tc)``: hydrogens that define double-bond stereo stay. ``"legacy"``: those
    are removed too."""
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    for a in m.GetAtoms():
        a.SetIntProp("orig_idx", a.GetIdx())
    params = Chem.RemoveHsParameters()  # RDKit's defaults, those of Chem.RemoveHs(mol)
    if check_scoring(scoring) == "legacy":
        params.removeDefiningBondStereo = True
    heavy = Chem.RemoveHs(m, params, sanitize=False)
    return heavy, [a.GetIntProp("orig_idx") for a in heavy.GetAtoms()]


def rmsd_matrix(mol: Chem.Mol, refs: Sequence[np.ndarray],
                gens: Sequence[np.ndarray], scoring: str = "td") -> np.ndarray:
    """Heavy-atom, symmetry-aware RMSD (Angstrom) of every (reference, generated) pair.

    Args:
        mol: the molecule (hydrogens may be present); its atom order is that of the arrays.
        refs: K reference conformers, each [n, 3] in ``mol``'s atom order.
        gens: G generated conformers, each [n, 3].
        scoring: ``"td"`` keeps the hydrogens RDKit's default ``RemoveHs`` keeps,
            ``"legacy"`` removes every hydrogen (module docstring).

    Returns:
        float64 [K, G].
    """
    heavy, idx = _heavy_template(mol, scoring)
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


def coverage_matching(rmsd: np.ndarray, delta: float, scoring: str = "td") -> dict[str, float]:
    """COV-R, MAT-R, COV-P, MAT-P of one molecule from its [K, G] RMSD matrix.

    Coverage as a fraction in [0, 1], matching in Angstrom. ``"td"``: covered when RMSD
    ``< delta`` (Torsional Diffusion's ``calc_performance_stats``); ``"legacy"``: ``<= delta``
    (GeoDiff). A NaN entry propagates through the minima as in TD: never covered, MAT NaN.
    """
    rmsd = np.asarray(rmsd, dtype=np.float64)
    if rmsd.ndim != 2 or 0 in rmsd.shape:
        raise ValueError(f"need a non-empty [K, G] RMSD matrix, got shape {rmsd.shape}")
    covered = np.less if check_scoring(scoring) == "td" else np.less_equal
    to_gen, to_ref = rmsd.min(1), rmsd.min(0)
    return {"cov_r": float(covered(to_gen, delta).mean()), "mat_r": float(to_gen.mean()),
            "cov_p": float(covered(to_ref, delta).mean()), "mat_p": float(to_ref.mean())}


# a molecule the method produced no conformer for, scored as Torsional Diffusion does: zero
# coverage, and no matching value (left out of the MAT averages by np.nanmean)
FAILURE = {"cov_r": 0.0, "mat_r": float("nan"), "cov_p": 0.0, "mat_p": float("nan")}


def summarise(per_molecule: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and median over molecules: ``cov_r_mean`` (%), ``mat_r_median`` (A), ...

    NaN values (failed molecules' MAT) are left out, as TD's ``np.nanmean``/``np.nanmedian``;
    a metric with no finite value is NaN."""
    out: dict[str, float] = {}
    for key in METRICS:
        values = np.array([m[key] for m in per_molecule], dtype=np.float64)
        values = values[~np.isnan(values)]
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
                     gens: Sequence[Sequence[np.ndarray]], delta: float,
                     scoring: str = "td",
                     per_molecule: list | None = None) -> dict[str, float | str]:
    """The table row for a set of molecules: COV/MAT mean and median, stereo agreement.

    Args:
        mols: the molecules (graphs with their stereo tags).
        refs: per molecule, its K reference conformers.
        gens: per molecule, the generated conformers (empty: the generator failed on it;
            counted in ``failed``; ``"td"``: zero coverage, left out of MAT; ``"legacy"``:
            left out of every average).
        delta: coverage threshold in Angstrom.
        scoring: ``"td"`` (Torsional Diffusion's evaluate_confs.py) or ``"legacy"``.
        per_molecule: a list that receives, in order, every scored molecule's
            ``{"cov_r", "mat_r", "cov_p", "mat_p"}`` (coverage as a fraction), for paired
            comparisons (``paired_difference``).

    Returns:
        cov_r_mean, cov_r_median, mat_r_mean, ... (coverage in %, matching in A),
        stereo_match (% of generated conformers of molecules with specified stereo whose
        3D stereo agrees), stereo_molecules, molecules (in the coverage averages), failed,
        conformers, delta, scoring.
    """
    check_scoring(scoring)
    per_mol, stereo = [], []
    n_stereo = failed = n_confs = 0
    for mol, r, g in zip(mols, refs, gens, strict=True):
        if len(g) == 0:
            failed += 1
            if scoring == "td":
                per_mol.append(FAILURE)
            continue
        n_confs += len(g)
        per_mol.append(coverage_matching(rmsd_matrix(mol, r, g, scoring), delta, scoring))
        wanted = stereo_labels(mol)
        if wanted:
            n_stereo += 1
            stereo += stereo_matches(mol, g, wanted)
    if per_molecule is not None:
        per_molecule.extend(dict(m) for m in per_mol)
    out = summarise(per_mol)
    out.update(stereo_match=float(100 * np.mean(stereo)) if stereo else float("nan"),
               stereo_molecules=n_stereo, molecules=len(per_mol), failed=failed,
               conformers=n_confs, delta=float(delta), scoring=scoring)
    return out


def paired_difference(a: Sequence[dict[str, float]], b: Sequence[dict[str, float]],
                      resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Method a minus method b on the same molecules (``per_molecule`` lists of
    ``ensemble_metrics``, td scoring): the mean per-molecule difference of COV-R (percentage
    points) and of MAT-R (A, over the molecules both matched) with a 95% percentile
    bootstrap interval over molecules (Efron & Tibshirani 1993), and how many molecules a
    is better / worse on."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired rows need the same molecules, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {"molecules": float(len(a))}
    for key, scale in (("cov_r", 100.0), ("mat_r", 1.0)):
        d = np.array([x[key] - y[key] for x, y in zip(a, b)], dtype=np.float64) * scale
        d = d[~np.isnan(d)]
        if not len(d):
            continue
        boot = rng.choice(d, size=(resamples, len(d)), replace=True).mean(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        better = (d > 0) if key == "cov_r" else (d < 0)
        worse = (d < 0) if key == "cov_r" else (d > 0)
        out.update({f"{key}_diff": float(d.mean()), f"{key}_ci_low": float(lo),
                    f"{key}_ci_high": float(hi), f"{key}_better": float(better.sum()),
                    f"{key}_worse": float(worse.sum()), f"{key}_pairs": float(len(d))})
    return out
