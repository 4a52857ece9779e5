"""The training range of a conformer model (scope.py): measured on the training molecules,
stored with the model, and checked before a molecule is sampled: ``diffplat conformers``
refuses a molecule outside it in one line (or warns with ``--allow-out-of-range``), and so
does ``Pipeline.sample(smiles=...)`` (or warns with ``allow_out_of_range=True``)."""

import json
import shutil
import warnings

import numpy as np
import pytest
from rdkit import Chem

import diffplat
from diffplat.cli import main
from domains.molecules.conformers.scope import (
    QM9_RANGE,
    OutOfRangeError,
    OutOfRangeWarning,
    graph_range,
    out_of_range,
)

IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"


def _mol(smiles):
    return Chem.AddHs(Chem.MolFromSmiles(smiles))


def test_graph_range_counts_what_the_training_molecules_hold():
    # ethanol (9 atoms), phenol (13 atoms, one 6-ring), naphthalene (two fused 6-rings),
    # spiro[4.4]nonane (two 5-rings sharing one atom), cyclopropanone
    rng = graph_range(_mol(s) for s in ("CCO", "Oc1ccccc1", "c1ccc2ccccc2c1",
                                        "C1CCC2(C1)CCCC2", "O=C1CC1"))
    assert rng["molecules"] == 5
    assert rng["max_atoms"] == 25 and rng["max_heavy_atoms"] == 10  # the spiro compound
    assert rng["elements"] == ["C", "H", "O"] and rng["charges"] == [0]
    assert rng["ring_sizes"] == [3, 5, 6] and rng["max_rings"] == 2
    assert rng["max_system_rings"] == 2
    assert rng["max_diameter"] == 5  # naphthalene: C2 to C6 across both rings
    json.dumps(rng)  # stored in checkpoints and export folders as JSON


@pytest.mark.parametrize("smiles,said", [
    ("CCCCCCCCCC", "32 atoms (trained on <= 25)"),
    ("CCS", "element S (trained on C, H, O)"),
    ("C1CCCCCCC1", "ring size 8 (trained on 3, 5, 6)"),
    ("c1ccc2cc3ccccc3cc2c1", "3 rings in one ring system (trained on <= 2)"),
    ("C[NH3+]", "formal charge 1 (trained on 0)"),
])
def test_out_of_range_names_what_lies_outside(smiles, said):
    rng = graph_range(_mol(s) for s in ("CCO", "Oc1ccccc1", "c1ccc2ccccc2c1",
                                        "C1CCC2(C1)CCCC2", "O=C1CC1"))
    assert said in out_of_range(_mol(smiles), rng)
    for inside in ("CCO", "OCC1CC1", "Cc1ccccc1"):
        assert out_of_range(_mol(inside), rng) == []
    assert out_of_range(_mol(smiles), None) == []  # no range known: nothing to check


def test_qm9_range_holds_every_training_molecule_of_a_qm9_sample(qm9_small):
    """QM9_RANGE (for models saved before the range was stored) was measured on QM9's
    whole training split; a 3,000-molecule sample of QM9 lies inside it and reaches its
    atom and heavy-atom maxima."""
    from domains.molecules.conformers.domain import ConformerDomain

    domain = ConformerDomain(data_path=str(qm9_small))
    mols = [g.mol for g in domain.graphs("train")]
    sample = graph_range(mols)
    assert sample["max_heavy_atoms"] == QM9_RANGE["max_heavy_atoms"] == 9
    assert sample["max_atoms"] <= QM9_RANGE["max_atoms"] == 29
    assert [m for m in mols if out_of_range(m, QM9_RANGE)] == []
    # and the domain measured the same range on its training molecules, for its checkpoint
    assert domain.sampling_state()["training_range"] == {**sample, "source": str(qm9_small)}


def test_the_shipped_refiner_refuses_ibuprofen_in_one_line(tmp_path, capsys):
    """The shipped model stores no range (saved before it was kept): QM9's applies. Ibuprofen
    (33 atoms, 15 heavy) is refused before anything runs, naming what is out of range; an
    in-range molecule beside it is still written; --allow-out-of-range warns and goes on."""
    out = tmp_path / "o.sdf"
    rc = main(["conformers", "--model", "conformers-qm9-refine", "--smiles", IBUPROFEN,
               "--smiles", "CCO", "-n", "2", "--refine-from", "etkdg", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    line = next(x for x in err.splitlines() if "training range" in x)
    assert line.startswith(f"diffplat conformers: error: molecule 1 ({IBUPROFEN}): outside "
                           "conformers-qm9-refine's training range: 33 atoms (trained on "
                           "<= 29); 15 heavy atoms (trained on <= 9)")
    assert "Traceback" not in err and "--allow-out-of-range" in line
    recs = list(Chem.SDMolSupplier(str(out), removeHs=False))
    assert [r.GetProp("_Name") for r in recs] == ["CCO", "CCO"]
    rc = main(["conformers", "--model", "conformers-qm9-refine", "--smiles", IBUPROFEN,
               "-n", "2", "--refine-from", "etkdg", "--allow-out-of-range", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: molecule 1" in err and "33 atoms (trained on <= 29)" in err
    recs = list(Chem.SDMolSupplier(str(out), removeHs=False))
    assert len(recs) == 2 and all(r.GetNumAtoms() == 33 for r in recs)


def test_python_refuses_or_warns_as_the_cli_does():
    model = diffplat.load("conformers-qm9-refine")
    with pytest.raises(OutOfRangeError, match=r"33 atoms \(trained on <= 29\)") as err:
        model.sample(2, smiles=[IBUPROFEN, "CCO"], copies=1, refine_from="etkdg")
    assert IBUPROFEN in str(err.value) and "'CCO'" not in str(err.value)
    with pytest.warns(OutOfRangeWarning, match=r"15 heavy atoms \(trained on <= 9\)"):
        confs = model.sample(2, smiles=[IBUPROFEN], refine_from="etkdg",
                             allow_out_of_range=True)
    assert len(confs) == 2 and confs[0].positions.shape == (33, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)  # in range: not a word
        assert len(model.sample(2, smiles=["CCO"], refine_from="etkdg")) == 2


def test_a_new_model_stores_its_range_and_an_old_export_still_loads(qm9_small, tmp_path,
                                                                   capsys):
    """A model trained now carries the range of its own training molecules (independently
    re-measured from the data here) through checkpoint and export; the same export without
    it (as saved before) loads and falls back to QM9's range."""
    from diffplat.training.checkpoint import load_module
    from domains.molecules.conformers.domain import ConformerDomain
    from tests.test_conformers_cli import CONFIG

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=tmp_path / "run", data=qm9_small))
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    fresh = ConformerDomain(data_path=str(qm9_small), max_train=64)
    expected = graph_range(g.mol for g in fresh.graphs("train"))
    rng = load_module(ckpt).domain.training_range()
    assert {k: v for k, v in rng.items() if k != "source"} == expected
    assert rng["max_atoms"] < 29 or rng["ring_sizes"] != QM9_RANGE["ring_sizes"]
    export = tmp_path / "export"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(export)]) == 0
    pipe = diffplat.load(export)
    assert pipe.domain.training_range() == rng
    # outside this model's (narrower) range, inside QM9's: refused by this model
    too_big = next(s for s in ("CCCCCCCC(C)O", "OCC1CC2CC1C2", "C1CCCCCCC1")
                   if out_of_range(_mol(s), rng))
    with pytest.raises(OutOfRangeError, match="training range"):
        pipe.sample(1, smiles=[too_big], steps=2)
    with pytest.warns(OutOfRangeWarning):
        assert len(pipe.sample(1, smiles=[too_big], steps=2, allow_out_of_range=True)) == 1
    # the generic sampler refuses it in one line too
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(export), "--num", "1", "--steps", "2", "--no-progress",
                 "--prior", f"smiles=[{too_big}]", "--out", str(tmp_path / "s")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training range" in err[0] and too_big in err[0]
    old = tmp_path / "old"
    shutil.copytree(export, old)
    meta = json.loads((old / "config.json").read_text())
    del meta["domain_state"]["training_range"]
    (old / "config.json").write_text(json.dumps(meta))
    legacy = diffplat.load(old)
    assert legacy.domain.training_range() == QM9_RANGE
    a = legacy.sample(2, smiles=["CCO"], steps=2, seed=1)
    b = pipe.sample(2, smiles=["CCO"], steps=2, seed=1)
    np.testing.assert_allclose(a[0].positions, b[0].positions)  # same weights, same draw
