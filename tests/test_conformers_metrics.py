"""Conformer metrics on hand-built cases, against numpy Kabsch and exact hand values."""

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from domains.molecules.conformers.metrics import (
    coverage_matching,
    ensemble_metrics,
    paired_difference,
    rmsd_matrix,
    stereo_labels,
    stereo_matches,
    summarise,
)


def _embedded(smiles, num=3, seed=7):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = AllChem.EmbedMultipleConfs(mol, num, randomSeed=seed)
    assert len(ids) == num
    return mol, [mol.GetConformer(i).GetPositions() for i in ids]


def _rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _kabsch_rmsd(a, b):
    """Independent RMSD after optimal superposition, identity atom mapping (numpy)."""
    a, b = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1, 1, d]) @ vt
    return float(np.sqrt(((a @ rot - b) ** 2).sum(1).mean()))


# 2-amino-3-fluoropropanal: no two heavy atoms are symmetry-equivalent
SMILES = "N[C@H](CF)C=O"


def test_identical_and_rigidly_moved_copies_have_mat_zero_and_full_coverage():
    mol, confs = _embedded(SMILES)
    moved = [c @ _rotation(k).T + np.array([3.0, -1.5, 7.0]) for k, c in enumerate(confs)]
    for gens in (confs, moved):
        r = rmsd_matrix(mol, confs, gens)
        assert np.allclose(np.diag(r), 0.0, atol=1e-4)
        row = coverage_matching(r, 0.5)
        assert row["cov_r"] == 1.0 and row["cov_p"] == 1.0
        assert row["mat_r"] < 1e-4 and row["mat_p"] < 1e-4
    out = ensemble_metrics([mol], [confs], [moved], delta=0.5)
    assert out["cov_r_mean"] == 100.0 and out["cov_p_median"] == 100.0
    assert out["mat_r_mean"] < 1e-4 and out["stereo_match"] == 100.0


def test_perturbed_copy_gives_the_kabsch_rmsd_of_the_heavy_atoms():
    mol, confs = _embedded(SMILES, num=1)
    ref = confs[0]
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    rng = np.random.default_rng(3)
    disp = np.zeros_like(ref)
    disp[heavy] = rng.normal(scale=0.4, size=(len(heavy), 3))
    disp[[a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 1]] = 5.0  # ignored
    probe = (ref + disp) @ _rotation(1).T + 2.0
    expected = _kabsch_rmsd(probe[heavy], ref[heavy])
    assert expected > 0.2  # a real perturbation that alignment cannot remove
    got = rmsd_matrix(mol, [ref], [probe])[0, 0]
    assert got == pytest.approx(expected, abs=1e-6)
    # coverage counts RMSD < delta (TD); the legacy scoring <= delta (GeoDiff)
    assert coverage_matching([[got]], got)["cov_r"] == 0.0
    assert coverage_matching([[got]], got + 1e-6)["cov_r"] == 1.0
    assert coverage_matching([[got]], got, "legacy")["cov_r"] == 1.0
    assert coverage_matching([[got]], got - 1e-6, "legacy")["cov_r"] == 0.0


def test_rmsd_is_symmetry_aware():
    """Swapping the two methyl carbons of isopropanol is the same conformer."""
    mol, confs = _embedded("CC(C)O", num=1)
    ref = confs[0]
    swapped = ref.copy()
    swapped[[0, 2]] = ref[[2, 0]]
    heavy = [0, 1, 2, 3]
    assert _kabsch_rmsd(swapped[heavy], ref[heavy]) > 0.3  # identity mapping sees a change
    assert rmsd_matrix(mol, [ref], [swapped])[0, 0] < 1e-4


def test_coverage_and_matching_by_hand():
    r = np.array([[0.2, 0.7, 0.5],
                  [0.6, 0.9, 1.0]])
    out = coverage_matching(r, 0.5)
    assert out["cov_r"] == pytest.approx(0.5)            # row minima 0.2, 0.6
    assert out["mat_r"] == pytest.approx(0.4)
    assert out["cov_p"] == pytest.approx(1 / 3)          # column minima 0.2, 0.7, 0.5 (< 0.5)
    assert coverage_matching(r, 0.5, "legacy")["cov_p"] == pytest.approx(2 / 3)  # <= 0.5
    assert out["mat_p"] == pytest.approx(1.4 / 3)
    s = summarise([out, coverage_matching(np.array([[0.1]]), 0.5),
                   coverage_matching(np.array([[2.0]]), 0.5)])
    assert s["cov_r_mean"] == pytest.approx(100 * 1.5 / 3)
    assert s["cov_r_median"] == pytest.approx(50.0)
    assert s["mat_r_median"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="non-empty"):
        coverage_matching(np.zeros((0, 2)), 0.5)


def test_stereo_agreement_follows_the_3d_geometry():
    mol, confs = _embedded("C[C@H](O)/C=C/C", num=3)
    assert stereo_labels(mol) == {("atom", 1): "S", ("bond", 3): "E"}
    assert stereo_matches(mol, confs) == [True] * 3
    mirrored = [c * np.array([-1.0, 1.0, 1.0]) for c in confs]
    assert stereo_matches(mol, mirrored) == [False] * 3   # R instead of S
    # E/Z survives a reflection: an achiral alkene matches its mirror image
    alkene, aconfs = _embedded("C/C=C/CO", num=2)
    assert stereo_matches(alkene, [c * np.array([1.0, -1.0, 1.0]) for c in aconfs]) == [True] * 2
    # the same geometry against the Z graph does not match
    z_graph = Chem.AddHs(Chem.MolFromSmiles("C/C=C\\CO"))
    assert stereo_matches(z_graph, aconfs) == [False] * 2
    out = ensemble_metrics([mol], [confs[:1]], [confs[:1] + mirrored[:1]], 0.5)
    assert out["stereo_match"] == pytest.approx(50.0) and out["stereo_molecules"] == 1
    failed = ensemble_metrics([mol], [confs], [[]], 0.5, "legacy")
    assert failed["failed"] == 1 and failed["molecules"] == 0


def test_etkdg_baseline_gives_distinct_conformers_for_seed_zero():
    """RDKit's randomSeed=0 makes all conformers identical; the baseline avoids it."""
    from domains.molecules.conformers.baseline import rdkit_conformers

    mol = Chem.AddHs(Chem.MolFromSmiles("CCCCO"))
    p = AllChem.ETKDGv3()
    p.randomSeed = 0
    quirk = Chem.Mol(mol)
    ids = list(AllChem.EmbedMultipleConfs(quirk, 3, p))
    same = rmsd_matrix(quirk, [quirk.GetConformer(ids[0]).GetPositions()],
                       [quirk.GetConformer(i).GetPositions() for i in ids])
    confs = rdkit_conformers(mol, 3, seed=0)
    r = rmsd_matrix(mol, confs[:1], confs)
    assert len(confs) == 3 and r[0, 1:].min() > 0.05
    if same.max() < 1e-6:  # the quirk is present in this RDKit version
        assert r.max() > same.max()
    assert np.allclose(confs[1], rdkit_conformers(mol, 3, seed=0)[1])  # reproducible


# -- Torsional Diffusion's scoring (evaluate_confs.py), issue #16 ------------------------------

def test_coverage_at_exactly_delta_is_strict_for_td_and_not_for_legacy():
    r = np.array([[0.5, 0.75],      # row minima 0.5 (at delta), 0.25
                  [0.25, 1.0],
                  [0.125, 0.5]])    # column minima 0.125, 0.5 (at delta)
    td, legacy = coverage_matching(r, 0.5), coverage_matching(r, 0.5, "legacy")
    assert td["cov_r"] == pytest.approx(2 / 3) and legacy["cov_r"] == 1.0
    assert td["cov_p"] == pytest.approx(1 / 2) and legacy["cov_p"] == 1.0
    assert td["mat_r"] == legacy["mat_r"] == pytest.approx((0.5 + 0.25 + 0.125) / 3)
    assert td["mat_p"] == legacy["mat_p"] == pytest.approx((0.125 + 0.5) / 2)
    with pytest.raises(ValueError, match="unknown scoring 'geodiff'; choose from td, legacy"):
        coverage_matching(r, 0.5, "geodiff")


def test_summarise_counts_a_failure_as_zero_coverage_and_leaves_it_out_of_matching():
    from domains.molecules.conformers.metrics import FAILURE

    # cov_r 1, cov_p 1/2, mat_r 0.1, mat_p 0.5; then cov_r 1/2, cov_p 1, mat_r 0.5, mat_p 0.3
    ok = [coverage_matching(np.array([[0.1, 0.9]]), 0.5),
          coverage_matching(np.array([[0.7], [0.3]]), 0.5)]
    s = summarise(ok + [FAILURE, FAILURE])
    assert s["cov_r_mean"] == pytest.approx(100 * 1.5 / 4)      # (1 + 0.5 + 0 + 0) / 4
    assert s["cov_r_median"] == pytest.approx(100 * 0.25)       # median of 0, 0, 0.5, 1
    assert s["cov_p_mean"] == pytest.approx(100 * 1.5 / 4)
    assert s["mat_r_mean"] == pytest.approx(0.3)                # (0.1 + 0.5) / 2
    assert s["mat_p_median"] == pytest.approx((0.5 + 0.3) / 2)  # (0.5, 0.3), failures out
    alone = summarise([FAILURE])
    assert alone["cov_r_mean"] == 0.0 and np.isnan(alone["mat_r_mean"])


def test_ensemble_metrics_td_counts_failed_molecules_zero_legacy_leaves_them_out():
    mol, confs = _embedded(SMILES, num=1)
    ref = confs[0]
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    far = ref.copy()
    far[heavy] += np.random.default_rng(5).normal(scale=0.8, size=(len(heavy), 3))
    r_far = _kabsch_rmsd(far[heavy], ref[heavy])
    assert r_far > 0.5
    mols, refs, gens = [mol] * 3, [[ref]] * 3, [[ref, ref], [far, far], []]
    td = ensemble_metrics(mols, refs, gens, 0.5)
    assert td["scoring"] == "td" and td["molecules"] == 3 and td["failed"] == 1
    assert td["cov_r_mean"] == pytest.approx(100 / 3) and td["cov_r_median"] == 0.0
    assert td["cov_p_mean"] == pytest.approx(100 / 3)
    assert td["mat_r_mean"] == pytest.approx(r_far / 2, abs=1e-6)  # the two that have conformers
    old = ensemble_metrics(mols, refs, gens, 0.5, "legacy")
    assert old["scoring"] == "legacy" and old["molecules"] == 2 and old["failed"] == 1
    assert old["cov_r_mean"] == pytest.approx(50.0) and old["cov_r_median"] == pytest.approx(50.0)
    assert old["mat_r_mean"] == pytest.approx(td["mat_r_mean"])


IMINE = "[H]/N=C/C"  # ethanimine, E: the N's hydrogen is what defines the double bond's stereo


def _kept_by_rdkit_removehs(mol):
    """Original indices of the atoms RDKit's default Chem.RemoveHs keeps."""
    m = Chem.Mol(mol)
    for a in m.GetAtoms():
        a.SetIntProp("k", a.GetIdx())
    return [a.GetIntProp("k") for a in Chem.RemoveHs(m).GetAtoms()]


def test_hydrogen_defining_double_bond_stereo_is_kept_as_rdkit_removehs_keeps_it():
    from domains.molecules.conformers.graph import mol_from_xyz
    from domains.molecules.conformers.metrics import _heavy_template

    mol, confs = _embedded(IMINE, num=1)
    # the same molecule as diffplat's QM9 data builds it: bonds and stereo from the geometry
    xyz = mol_from_xyz(confs[0], np.array([a.GetAtomicNum() for a in mol.GetAtoms()]))
    for m in (mol, xyz):
        kept = _kept_by_rdkit_removehs(m)
        h = [i for i in kept if m.GetAtomWithIdx(i).GetAtomicNum() == 1]
        assert len(h) == 1 and m.GetAtomWithIdx(h[0]).GetNeighbors()[0].GetSymbol() == "N"
        assert _heavy_template(m)[1] == kept
        assert len(_heavy_template(m, "legacy")[1]) == len(kept) - 1
    # moving only that hydrogen changes the td RMSD by the Kabsch RMSD over the kept atoms
    kept = _kept_by_rdkit_removehs(mol)
    h = next(i for i in kept if mol.GetAtomWithIdx(i).GetAtomicNum() == 1)
    moved = confs[0].copy()
    moved[h] += np.array([0.6, -0.9, 0.4])
    expected = _kabsch_rmsd(moved[kept], confs[0][kept])
    assert expected > 0.1
    assert rmsd_matrix(mol, confs, [moved])[0, 0] == pytest.approx(expected, abs=1e-6)
    assert rmsd_matrix(mol, confs, [moved], "legacy")[0, 0] < 1e-6


def _td_rmsd(mol, a, b):
    """TD's worker_fn, written out: GetBestRMS(RemoveHs(tc), RemoveHs(mc)) on single-conformer
    copies of ``mol``."""
    from rdkit.Chem import rdMolAlign

    def one(pos):
        m = Chem.Mol(mol)
        m.RemoveAllConformers()
        conf = Chem.Conformer(m.GetNumAtoms())
        for i, p in enumerate(pos):
            conf.SetAtomPosition(i, [float(v) for v in p])
        m.AddConformer(conf)
        return Chem.RemoveHs(m)

    return rdMolAlign.GetBestRMS(one(a), one(b))


def test_ensemble_metrics_match_a_straightforward_td_reimplementation():
    smiles = ["CC(O)C#N", "O=CC1CC1", "[H]/N=C(/C)CO", "OCC=O"]
    mols, refs, gens = [], [], []
    for k, s in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(s))
        ids = list(AllChem.EmbedMultipleConfs(mol, 6, randomSeed=11 + k))
        assert len(ids) == 6
        pos = [mol.GetConformer(i).GetPositions() for i in ids]
        mols.append(mol)
        refs.append(pos[:2])
        gens.append(pos[2:] if k < 3 else [])  # the last molecule: the method failed
    for delta in (0.1, 0.5):
        cr, cp, mr, mp = [], [], [], []
        for mol, rs, gs in zip(mols, refs, gens):
            if not gs:
                continue
            rmsd = np.array([[_td_rmsd(mol, t, g) for g in gs] for t in rs])
            cr.append(np.mean(rmsd.min(axis=1) < delta))
            cp.append(np.mean(rmsd.min(axis=0) < delta))
            mr.append(rmsd.min(axis=1).mean())
            mp.append(rmsd.min(axis=0).mean())
        cr, cp = cr + [0], cp + [0]  # TD's "+ [0] * num_failures"
        got = ensemble_metrics(mols, refs, gens, delta)
        assert got["cov_r_mean"] == pytest.approx(100 * np.mean(cr), abs=1e-9)
        assert got["cov_r_median"] == pytest.approx(100 * np.median(cr), abs=1e-9)
        assert got["cov_p_mean"] == pytest.approx(100 * np.mean(cp), abs=1e-9)
        assert got["cov_p_median"] == pytest.approx(100 * np.median(cp), abs=1e-9)
        assert got["mat_r_mean"] == pytest.approx(np.nanmean(mr), abs=1e-6)
        assert got["mat_r_median"] == pytest.approx(np.nanmedian(mr), abs=1e-6)
        assert got["mat_p_mean"] == pytest.approx(np.nanmean(mp), abs=1e-6)
        assert got["mat_p_median"] == pytest.approx(np.nanmedian(mp), abs=1e-6)
    assert 0 < np.mean(cr) < 1  # at delta 0.5 some references are covered and some not


def test_paired_difference_by_hand():
    nan = float("nan")
    a = [{"cov_r": 1.0, "mat_r": 0.2}, {"cov_r": 0.0, "mat_r": 0.9}, {"cov_r": 1.0, "mat_r": 0.1},
         {"cov_r": 0.0, "mat_r": nan}]
    b = [{"cov_r": 0.0, "mat_r": 0.6}, {"cov_r": 0.0, "mat_r": 0.8}, {"cov_r": 1.0, "mat_r": 0.1},
         {"cov_r": 1.0, "mat_r": 0.3}]
    d = paired_difference(a, b, resamples=4000, seed=1)
    assert d["molecules"] == 4
    assert d["cov_r_diff"] == pytest.approx(0.0)       # (+1 + 0 + 0 - 1) / 4
    assert (d["cov_r_better"], d["cov_r_worse"]) == (1, 1)
    # MAT-R over the three pairs both matched: (-0.4 + 0.1 + 0) / 3; a failure is no pair
    assert d["mat_r_diff"] == pytest.approx(-0.1) and d["mat_r_pairs"] == 3
    assert (d["mat_r_better"], d["mat_r_worse"]) == (1, 1)
    assert -0.4 - 1e-9 <= d["mat_r_ci_low"] <= d["mat_r_diff"] <= d["mat_r_ci_high"] <= 0.1
    same = paired_difference(a, a)
    assert same["cov_r_ci_low"] == same["cov_r_ci_high"] == 0.0
    with pytest.raises(ValueError, match="same molecules"):
        paired_difference(a, b[:2])
