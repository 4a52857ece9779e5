"""QM9 preparation (EDM's split) and molecule file reading / writing."""

from __future__ import annotations

import numpy as np
import pytest

from domains.molecules import qm9  # noqa: E402
from domains.molecules.io import read_molecules, write_sdf, write_xyz  # noqa: E402

# EDM's configs/datasets_config.py (qm9_with_h): train molecules per atom count, train atoms
# per element. Matching both checks the split membership, not just its sizes.
EDM_TRAIN_N_NODES = {22: 3393, 17: 13025, 23: 4848, 21: 9970, 19: 13832, 20: 9482, 16: 10644,
                     13: 3060, 15: 7796, 25: 1506, 18: 13364, 12: 1689, 11: 807, 24: 539,
                     14: 5136, 26: 48, 7: 16, 10: 362, 8: 49, 9: 124, 27: 266, 4: 4, 29: 25,
                     6: 9, 5: 5, 3: 1}
EDM_TRAIN_ATOMS = {"H": 923537, "C": 635559, "N": 101476, "O": 140202, "F": 2323}


@pytest.fixture(scope="module")
def full_columns():
    """Atom counts and element lists of all 130,831 molecules, in GDB9 order."""
    cols = qm9._read_csvs(qm9.qm9_data_dir())
    order = np.argsort(np.array(cols["Index"], dtype=np.int64), kind="stable")
    return {"n_atoms": np.array(cols["N_atoms"], dtype=np.int64)[order],
            "elements": [cols["Elements"][k] for k in order.tolist()]}


@pytest.fixture(scope="module")
def head_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("qm9head")
    paths = qm9.prepare_qm9(out, limit=300)
    return paths, qm9.load_qm9(paths[0])


def test_split_sizes_and_cover():
    split = qm9.edm_split(qm9.N_MOLECULES)
    assert np.bincount(split).tolist() == [100_000, 17_748, 13_083]
    # cormorant: seed 0, one permutation, consecutive train / valid / test slices
    state = np.random.get_state()
    np.random.seed(0)
    perm = np.random.permutation(qm9.N_MOLECULES)
    np.random.set_state(state)
    parts = [perm[:100_000], perm[100_000:117_748], perm[117_748:]]
    for code, part in enumerate(parts):
        assert (split[part] == code).all()
    assert len(np.unique(np.concatenate(parts))) == qm9.N_MOLECULES      # disjoint, cover


def test_edm_split_leaves_global_rng_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    qm9.edm_split(1000, n_train=800)
    assert np.random.rand() == expected


def test_train_split_matches_edm_statistics(full_columns):
    split = qm9.edm_split(qm9.N_MOLECULES)
    train = split == 0
    hist = np.bincount(full_columns["n_atoms"][train])
    assert {k: int(v) for k, v in enumerate(hist) if v} == EDM_TRAIN_N_NODES
    joined = "".join(e for e, t in zip(full_columns["elements"], train.tolist()) if t)
    assert {s: joined.count(f"'{s}'") for s in EDM_TRAIN_ATOMS} == EDM_TRAIN_ATOMS


def test_prepared_head(head_cache, full_columns):
    paths, cache = head_cache
    assert [p.name for p in paths] == ["qm9.npz"]
    assert len(cache) == 300
    pos, z = cache.molecule(0)
    assert cache.symbols(0) == ["C", "H", "H", "H", "H"] and z.tolist() == [6, 1, 1, 1, 1]
    assert pos.shape == (5, 3) and pos.dtype == np.float32
    assert cache.smiles(0) == "C" and cache.edm_smiles(0) == "[H]C([H])([H])[H]"
    assert cache.arrays["gdb9_index"][:3].tolist() == [1, 2, 3]
    assert cache.arrays["n_atoms"].tolist() == full_columns["n_atoms"][:300].tolist()
    full_split = qm9.edm_split(qm9.N_MOLECULES)
    assert cache.arrays["split"].tolist() == full_split[:300].tolist()
    train = cache.split_indices("train")
    assert np.array_equal(cache.split_indices("val"), cache.split_indices("valid"))
    hist = cache.n_atoms_histogram()
    assert hist.sum() == len(train)
    assert hist.tolist() == np.bincount(cache.arrays["n_atoms"][train],
                                        minlength=len(hist)).tolist()
    assert cache.arrays["gap_ev"][0] == pytest.approx(0.5048 * 27.2114)
    assert cache.arrays["alpha"][0] == pytest.approx(13.21)


def test_cache_has_no_pickles(head_cache):
    paths, _ = head_cache
    with np.load(paths[0], allow_pickle=False) as f:
        for key in f.files:
            assert f[key].dtype != object, key
    info = qm9.describe_qm9(paths[0].parent)
    assert info["molecules"] == 300 and info["elements"]["C"] > 0
    assert sum(info["splits"].values()) == 300 and info["atoms_per_molecule"]["min"] == 3


def test_missing_cache_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare"):
        qm9.load_qm9(tmp_path / "nope.npz")


# -- io -----------------------------------------------------------------------------------------
def _mols(rng):
    ethanol = (rng.normal(size=(9, 3)) * 2, ["C", "C", "O"] + ["H"] * 6,
               [(0, 1, 1), (1, 2, 1)], "ethanol-ish")
    odd = (rng.normal(size=(3, 3)) * 2, ["C", "C", "C"], [(0, 1, 3), (1, 2, 3)], "pentavalent")
    aromatic = (rng.normal(size=(2, 3)), ["C", "N"], [(0, 1, 4)], "")
    return [ethanol, odd, aromatic]


def test_sdf_and_xyz_round_trip(tmp_path):
    mols = _mols(np.random.default_rng(0))
    write_sdf(tmp_path / "a.sdf", mols)
    write_xyz(tmp_path / "a.xyz", mols)
    for name, tol in (("a.sdf", 5e-5), ("a.xyz", 5e-7)):
        back = read_molecules(tmp_path / name)
        assert len(back) == 3 and back.skipped == {}
        for (pos, sym, _, name), (pos2, sym2, title) in zip(mols, back):
            assert sym2 == sym and pos2.dtype == np.float64
            assert title == (name or "a:3")
            np.testing.assert_allclose(pos2, pos, atol=tol)
    both = read_molecules(tmp_path)                 # folder: a.sdf then a.xyz
    assert len(both) == 6


GOOD_XYZ = "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"


def _sdf_with_bad_middle(tmp_path):
    rng = np.random.default_rng(1)
    write_sdf(tmp_path / "ok.sdf", _mols(rng)[:2])
    good = (tmp_path / "ok.sdf").read_text().split("$$$$\n")
    bad = "broken\n  RDKit\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\n    0.0 zz\nM  END\n"
    path = tmp_path / "mixed.sdf"
    path.write_text(good[0] + "$$$$\n" + bad + "$$$$\n" + good[1] + "$$$$\n")
    return path


@pytest.mark.parametrize("case", ["sdf_malformed", "xyz_element", "one_atom", "not_molecule",
                                  "wrong_extension", "xyz_truncated"])
def test_bad_input_named_and_skippable(tmp_path, case):
    elements = None
    if case == "sdf_malformed":
        path, record, reason, n_good = _sdf_with_bad_middle(tmp_path), 2, "malformed", 2
    elif case == "xyz_element":
        path = tmp_path / "el.xyz"
        path.write_text(GOOD_XYZ + "2\nxenon\nXe 0 0 0\nH 1 0 0\n" + GOOD_XYZ)
        path, record, reason, n_good, elements = path, 2, "element", 2, {"H", "C", "N", "O"}
    elif case == "one_atom":
        path = tmp_path / "one.xyz"
        path.write_text(GOOD_XYZ + "1\nneon-like\nC 0 0 0\n" + GOOD_XYZ)
        record, reason, n_good = 2, "one_atom", 2
    elif case == "not_molecule":
        path = tmp_path / "notes.sdf"
        path.write_text("these are my notes,\nnot a molecule\n")
        record, reason, n_good = 1, "not_molecule_file", 0
    elif case == "wrong_extension":
        path = tmp_path / "table.csv"
        path.write_text("a,b\n1,2\n")
        record, reason, n_good = None, "not_molecule_file", 0
    else:
        path = tmp_path / "cut.xyz"
        path.write_text(GOOD_XYZ + "5\ncut short\nC 0 0 0\nH 1 0 0\n")
        record, reason, n_good = 2, "malformed", 1
    with pytest.raises(ValueError) as err:
        read_molecules(path, elements=elements)
    message = str(err.value)
    assert str(path) in message and reason in message
    if record is not None:
        assert f"record {record}:" in message
    got = read_molecules(path, skip_bad=True, elements=elements)
    assert len(got) == n_good and got.skipped == {reason: 1}
    assert all(len(sym) > 1 for _, sym, _ in got)


def test_folder_skips_bad_files_keeps_good(tmp_path):
    (tmp_path / "a.xyz").write_text(GOOD_XYZ * 2)
    (tmp_path / "b.sdf").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    (tmp_path / "readme.txt").write_text("ignored: not .sdf / .xyz")
    with pytest.raises(ValueError, match="b.sdf"):
        read_molecules(tmp_path)
    got = read_molecules(tmp_path, skip_bad=True)
    assert len(got) == 2 and got.skipped == {"not_molecule_file": 1}
    assert got[0][1] == ["O", "H", "H"] and got[0][2] == "water"
