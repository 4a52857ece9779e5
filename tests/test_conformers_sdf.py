"""Training a conformer model on the user's own SDF conformers (docs/conformers.md): several
conformers per molecule in one SDF, or a folder of SDFs, elements outside QM9 (S, Cl), a few
steps end to end, then sampling without the data and scoring."""

import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from diffplat.cli import main
from tests.helpers import CPU_TRAINER

SMILES = ["CCS", "CCCl", "Oc1ccccc1", "CC(=O)N", "OCCO", "CCN", "CSC", "ClCCO", "CC(C)O",
          "C1CCOC1"]
CONFS = 3

CONFIG = CPU_TRAINER.replace("{steps}", "4") + """
model:
  domain:
    class_path: domains.molecules.conformers.domain.ConformerDomain
    init_args:
      data_path: {data}
  backbone:
    class_path: domains.molecules.conformers.backbone.ConformerEGNN
    init_args:
      hidden: 16
      layers: 2
  schedule: polynomial
  target: v
  batch_size: 8
  warmup_steps: 1
  sampler: dpmpp_2m
  sample_steps: 3
  sample_num: 0
"""


def _conformer_records(smiles, seed=0):
    """``CONFS`` MMFF-relaxed ETKDG conformers of one molecule, each its own record, titled
    with the molecule's name."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = AllChem.EmbedMultipleConfs(mol, CONFS, randomSeed=seed + 1)
    AllChem.MMFFOptimizeMoleculeConfs(mol)
    mol.SetProp("_Name", smiles)
    return [(mol, i) for i in ids]


def _write_sdf(path, smiles):
    writer = Chem.SDWriter(str(path))
    for s in smiles:
        for mol, cid in _conformer_records(s):
            writer.write(mol, confId=cid)
    writer.close()
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model fitted for 4 steps on one multi-conformer SDF."""
    tmp = tmp_path_factory.mktemp("sdf")
    data = _write_sdf(tmp / "mine.sdf", SMILES)
    cfg = tmp / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=tmp / "run", data=data))
    assert main(["fit", "-c", str(cfg)]) == 0
    return tmp, data, tmp / "run" / "checkpoints" / "last.ckpt"


def test_an_sdf_of_conformers_trains_and_keeps_every_conformer(trained):
    from diffplat.training.checkpoint import load_module
    from domains.molecules.conformers.domain import ConformerDomain

    tmp, data, ckpt = trained
    domain = ConformerDomain(data_path=str(data))
    graphs = [g for split in ("train", "val", "test") for g in domain.graphs(split)]
    assert len({g.name for g in graphs}) == len(SMILES)  # 90/5/5 split by molecule
    assert all(len(g.conformers) == CONFS for g in graphs)
    # each molecule's conformers are the file's, in the first record's atom order
    first = next(g for g in domain.graphs("train"))
    recs = [m for m in Chem.SDMolSupplier(str(data), removeHs=False)
            if Chem.MolToSmiles(m) == Chem.MolToSmiles(first.mol)]
    for conf, rec in zip(first.conformers, recs):
        np.testing.assert_allclose(conf, rec.GetConformer().GetPositions())
    module = load_module(ckpt)
    assert module.train_record["steps"] == 4
    assert set(module.domain.vocabulary) == {"H", "C", "N", "O", "S", "Cl"}
    rng = module.domain.training_range()
    assert rng["molecules"] == len(domain.graphs("train")) and "S" in rng["elements"]


def test_the_sdf_model_samples_without_its_data_and_scores(trained, tmp_path, capsys):
    tmp, data, ckpt = trained
    out = tmp_path / "o.sdf"
    moved = tmp / "moved.sdf"
    data.rename(moved)  # the checkpoint carries the vocabulary and the range
    try:
        assert main(["conformers", "--ckpt", str(ckpt), "--smiles", "CCS", "--smiles",
                     "CCCCCCCCCCCCS", "-n", "2", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "molecule 2 (CCCCCCCCCCCCS): outside" in err and "training range" in err
        recs = list(Chem.SDMolSupplier(str(out), removeHs=False))
        assert len(recs) == 2 and {a.GetSymbol() for a in recs[0].GetAtoms()} == {"C", "H",
                                                                                  "S"}
    finally:
        moved.rename(data)
    ev = tmp_path / "eval"
    assert main(["evaluate", "conformers", "--ckpt", str(ckpt), "--split", "test",
                 "--baseline", "rdkit", "--delta", "0.75", "--out", str(ev)]) == 0
    info = json.loads((ev / "metrics.json").read_text())
    assert info["num_mols"] >= 1 and len(info["rows"]) == 4  # model, ETKDG, td and legacy
    assert all("mmff_energy_median" in row for row in info["rows"].values())


def test_a_folder_of_sdfs_groups_by_title(tmp_path):
    """A folder of SDF files (GEOM layout: one title per molecule, ``group_by: name``): the
    conformers of a molecule split over two files come together, in one atom order."""
    from domains.molecules.conformers.domain import ConformerDomain

    folder = tmp_path / "confs"
    folder.mkdir()
    _write_sdf(folder / "a.sdf", SMILES[:6])
    _write_sdf(folder / "b.sdf", SMILES[4:])  # OCCO and CCN in both files
    (folder / "notes.txt").write_text("not an SDF")
    domain = ConformerDomain(data_path=str(folder), group_by="name")
    graphs = {g.name: g for split in ("train", "val", "test") for g in domain.graphs(split)}
    assert sorted(graphs) == sorted(SMILES)
    assert len(graphs["OCCO"].conformers) == len(graphs["CCN"].conformers) == 2 * CONFS
    assert len(graphs["CCS"].conformers) == CONFS
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=tmp_path / "run", data=folder).replace(
        "      data_path:", "      group_by: name\n      data_path:"))
    assert main(["fit", "-c", str(cfg)]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_the_example_config_trains_on_a_users_sdf(tmp_path):
    """configs/molecules/conformers-sdf.yaml as docs/conformers.md runs it, with the data
    path on the command line (2 steps here)."""
    from pathlib import Path

    from diffplat.training.checkpoint import load_module

    cfg = Path(__file__).resolve().parents[1] / "configs/molecules/conformers-sdf.yaml"
    data = _write_sdf(tmp_path / "my-conformers.sdf", SMILES)
    assert main(["fit", "-c", str(cfg), "--model.domain.init_args.data_path", str(data),
                 "--trainer.max_steps", "2", "--model.batch_size", "8",
                 "--trainer.default_root_dir",
                 str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
                 "--trainer.logger", "false"]) == 0
    module = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert module.domain.delta == 0.75 and "Cl" in module.domain.training_range()["elements"]
