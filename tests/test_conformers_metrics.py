"""Conformer metrics on hand-built cases, against numpy Kabsch and exact hand values."""

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from domains.molecules.conformers.metrics import (
    coverage_matching,
    ensemble_metrics,
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
