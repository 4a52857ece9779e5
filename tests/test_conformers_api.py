"""Conformers of given SMILES through the Python API (``diffplat.load(export).sample(num,
smiles=...)``) from a folder without the dataset, and ``diffplat conformers --refine-from
etkdg`` (SDEdit from ETKDG)."""

import shutil

import numpy as np
import pytest
from rdkit import Chem

import diffplat
from diffplat.cli import main
from tests.test_conformers_cli import CONFIG, UNEMBEDDABLE, _records

SMILES = ["CCO", "c1ccccc1O"]


@pytest.fixture(scope="module")
def export(qm9_small, tmp_path_factory):
    """A tiny conformer model trained for 8 steps (test_conformers_cli's config) on a copy of
    the data, exported with ``Pipeline.save``; the copy is deleted afterwards, so sampling
    cannot read it."""
    tmp = tmp_path_factory.mktemp("conf_api")
    data = tmp / "qm9.npz"
    shutil.copy(qm9_small, data)
    cfg = tmp / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=tmp / "run", data=data))
    assert main(["fit", "-c", str(cfg)]) == 0
    out = tmp / "export"
    diffplat.load(tmp / "run" / "checkpoints" / "last.ckpt").save(out)
    data.unlink()
    return out


@pytest.fixture
def pipe(export, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    return diffplat.load(export)


def _atoms(smiles):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    return [a.GetSymbol() for a in mol.GetAtoms()]


def test_sample_conformers_of_smiles_without_data(pipe, tmp_path):
    confs = pipe.sample(10, smiles=SMILES, copies=5, steps=3, seed=1)
    assert len(confs) == 10
    for k, c in enumerate(confs):
        smiles = SMILES[k // 5]
        assert c.graph.name == smiles
        # the RDKit molecule's atoms with hydrogens, in order (Hs after the heavy atoms)
        assert [a.GetSymbol() for a in c.graph.mol.GetAtoms()] == _atoms(smiles)
        assert c.positions.shape == (len(_atoms(smiles)), 3)
        assert np.isfinite(c.positions).all()
        assert np.abs(c.positions.mean(0)).max() < 1e-4  # centred (zero centre of mass space)
    assert not np.allclose(confs[0].positions, confs[1].positions)  # copies differ
    assert pipe.domain.splits is None  # the dataset was never read

    again = pipe.sample(10, smiles=SMILES, copies=5, steps=3, seed=1)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(confs, again))
    other = pipe.sample(10, smiles=SMILES, copies=5, steps=3, seed=2)
    assert not np.allclose(confs[0].positions, other[0].positions)

    # copies follow from num; batch_size splits the molecules instead of repeating them
    implied = pipe.sample(4, smiles=SMILES, steps=2)
    assert [c.graph.name for c in implied] == ["CCO", "CCO", "c1ccccc1O", "c1ccccc1O"]
    chunked = pipe.sample(10, smiles=SMILES, copies=5, steps=2, batch_size=4)
    assert [c.graph.name for c in chunked] == [c.graph.name for c in confs]
    assert pipe.last_stats["chunks"] == 3
    single = pipe.sample(2, smiles="CCO", steps=2)
    assert [c.graph.name for c in single] == ["CCO", "CCO"]

    paths = pipe.write(confs, tmp_path / "out")
    recs = _records(tmp_path / "out" / "conformers.sdf")
    assert paths[0] == tmp_path / "out" / "conformers.sdf" and len(recs) == 10
    for k, (rec, c) in enumerate(zip(recs, confs)):
        assert rec.GetProp("_Name") == SMILES[k // 5]
        assert rec.GetIntProp("molecule") == k // 5 and rec.GetIntProp("conformer") == k % 5
        assert [a.GetSymbol() for a in rec.GetAtoms()] == _atoms(SMILES[k // 5])
        assert np.abs(rec.GetConformer().GetPositions() - c.positions).max() < 1e-3


def test_bad_smiles_and_unknown_elements_are_named(pipe):
    with pytest.raises(ValueError, match=r"unparsable SMILES 'C1CC'"):
        pipe.sample(2, smiles=["CCO", "C1CC"], steps=1)
    with pytest.raises(ValueError) as err:
        pipe.sample(3, smiles=["CCCl", "CCO", "OB(O)O"], steps=1)
    msg = str(err.value)
    assert "\n" not in msg
    assert "SMILES 'CCCl': element: element(s) Cl outside the model's vocabulary" in msg
    assert "SMILES 'OB(O)O': element: element(s) B outside" in msg
    assert "'CCO'" not in msg
    with pytest.raises(ValueError, match=r"num=3 must be len\(smiles\) \* copies = 2"):
        pipe.sample(3, smiles=SMILES, steps=1)
    with pytest.raises(ValueError, match=r"num=4 must be len\(smiles\) \* copies = 2 \* 3"):
        pipe.sample(4, smiles=SMILES, copies=3, steps=1)
    with pytest.raises(ValueError, match="at most one of split, graphs or smiles"):
        pipe.sample(2, smiles=SMILES, split="test", steps=1)


def _etkdg(smiles, num, seed):
    from domains.molecules.conformers.baseline import rdkit_conformers
    from domains.molecules.conformers.io import from_smiles

    return [c - c.mean(0) for c in rdkit_conformers(from_smiles(smiles).mol, num, seed=seed)]


def test_conformers_command_refines_etkdg_at_a_small_noise_level(export, tmp_path, capsys):
    """At schedule time 0.01 (noise level 0.0145) one step returns each ETKDG start (same
    seed, centred) after one denoise; ordinary sampling from the same model does not."""
    smiles = ["CCO", "N[C@@H](C)C=O"]
    args = ["conformers", "--ckpt", str(export), "--smiles", smiles[0], "--smiles", smiles[1],
            "-n", "3", "--steps", "1", "--seed", "2"]
    out = tmp_path / "refined.sdf"
    assert main([*args, "--refine-from", "etkdg", "--noise-level", "0.01",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "refined from ETKDG at t = 0.01, ETKDG's" in printed and "s included" in printed
    recs = _records(out)
    assert len(recs) == 6
    starts = {s: _etkdg(s, 3, seed=2) for s in smiles}
    for k, rec in enumerate(recs):
        start = starts[smiles[k // 3]][k % 3]
        diff = np.abs(rec.GetConformer().GetPositions() - start).max()
        assert 0 < diff < 0.1
        other_seed = _etkdg(smiles[k // 3], 3, seed=5)[k % 3]
        assert np.abs(rec.GetConformer().GetPositions() - other_seed).max() > 0.1

    plain = tmp_path / "plain.sdf"
    assert main([*args, "--out", str(plain)]) == 0
    far = [np.abs(r.GetConformer().GetPositions() - starts[smiles[k // 3]][k % 3]).max()
           for k, r in enumerate(_records(plain))]
    assert min(far) > 0.2

    # a molecule ETKDG cannot embed has no start: reported, the others written, status 1
    # (the tetrahedrane's fused three-membered rings are outside this tiny model's range)
    mixed = tmp_path / "mixed.sdf"
    assert main(["conformers", "--ckpt", str(export), "--smiles", UNEMBEDDABLE, "--smiles",
                 "CCO", "-n", "2", "--steps", "1", "--refine-from", "etkdg",
                 "--noise-level", "0.01", "--allow-out-of-range", "--out", str(mixed)]) == 1
    err = capsys.readouterr().err
    assert f"molecule 1 ({UNEMBEDDABLE}): RDKit could not embed this molecule" in err
    assert [r.GetProp("_Name") for r in _records(mixed)] == ["CCO", "CCO"]
    for bad in (["--refine-from", "etkdg"], ["--noise-level", "0.5"],
                ["--refine-from", "etkdg", "--noise-level", "0"]):
        with pytest.raises(SystemExit):
            main([*args, *bad, "--out", str(tmp_path / "x.sdf")])
    with pytest.raises(SystemExit):
        main(["conformers", "--baseline", "rdkit", "--smiles", "CCO", "--refine-from",
              "etkdg", "--noise-level", "0.5", "--out", str(tmp_path / "x.sdf")])


def test_sample_command_takes_smiles_as_a_prior_option(export, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(export), "--num", "4", "--steps", "2",
                 "--no-progress", "--prior", "smiles=[CCO, CO]", "--out", str(out)]) == 0
    recs = _records(out / "conformers.sdf")
    assert [(r.GetProp("_Name"), r.GetIntProp("molecule"), r.GetIntProp("conformer"))
            for r in recs] == [("CCO", 0, 0), ("CCO", 0, 1), ("CO", 1, 0), ("CO", 1, 1)]
    assert [a.GetSymbol() for a in recs[2].GetAtoms()] == _atoms("CO")
