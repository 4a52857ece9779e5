"""The molecules domain end to end from the CLI: QM9 and users' SDF files."""

import json

import numpy as np
import torch

from diffplat.cli import main
from tests.helpers import CPU_TRAINER

TINY = CPU_TRAINER + """
model:
  domain:
    class_path: domains.molecules.domain.MoleculeDomain
    init_args:
      data_path: {data}
      max_eval: 50
  backbone:
    class_path: domains.molecules.egnn.EGNNBackbone
    init_args:
      hidden: 16
      layers: 2
  schedule: polynomial
  target: eps
  batch_size: 16
  sampler: dpmpp_2m
  sample_steps: 8
  sample_num: 8
"""


def _config(tmp_path, data, steps=6):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(TINY.format(steps=steps, root=tmp_path / "run", data=data))
    return cfg


def test_reference_scores_match_edm_data_row(qm9_small, tmp_path):
    """EDM's row for QM9 itself: atom 99.0, molecule 95.2, valid 97.7 (full set)."""
    cfg = _config(tmp_path, qm9_small)
    out = tmp_path / "ref.json"
    assert main(["evaluate", "--reference", "-c", str(cfg), "--split", "train",
                 "--num", "1500", "--json", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    # 1500 molecules: binomial standard errors of ~0.55 points (molecule stability) and
    # ~0.4 (validity); atom stability pools ~27,000 atoms
    assert abs(m["atom_stability"] - 0.990) < 0.012
    assert abs(m["mol_stability"] - 0.952) < 0.02
    assert abs(m["validity"] - 0.977) < 0.015
    assert m["uniqueness"] > 0.99


def test_fit_sample_evaluate_writes_sdf_and_renders(qm9_small, tmp_path):
    from rdkit import Chem

    cfg = _config(tmp_path, qm9_small)
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "samples"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "12", "--steps", "6",
                 "--seed", "0", "--out", str(out), "--no-progress"]) == 0
    mols = [m for m in Chem.SDMolSupplier(str(out / "molecules.sdf"), sanitize=False,
                                          removeHs=False)]
    assert len(mols) == 12 and all(m is not None and m.GetNumAtoms() >= 1 for m in mols)
    assert (out / "molecules.xyz").is_file() and (out / "preview.png").stat().st_size > 5000
    # centres of mass of the generated coordinates are at the origin
    for m in mols:
        pos = torch.tensor(m.GetConformer().GetPositions())
        assert pos.mean(0).abs().max() < 1e-3
    res = tmp_path / "m.json"
    assert main(["evaluate", "--samples", str(out), "--json", str(res)]) == 0
    metrics = json.loads(res.read_text())["metrics"]
    assert set(metrics) >= {"atom_stability", "mol_stability", "validity", "uniqueness",
                            "valid_and_unique", "novelty"}
    assert metrics["n_molecules"] == 12


def test_users_sdf_folder_trains_with_its_own_vocabulary(qm9_small, tmp_path, capsys):
    from domains.molecules.io import write_sdf
    from domains.molecules.qm9 import load_qm9

    cache = load_qm9(qm9_small)
    folder = tmp_path / "mine"
    folder.mkdir()
    # molecules without fluorine: the vocabulary is then H, C, N, O
    mols = [m for m in cache.molecules(cache.split_indices("train")[:300])
            if "F" not in m[1]][:120]
    write_sdf(folder / "a.sdf", [(p, s, None) for p, s in mols[:60]])
    write_sdf(folder / "b.sdf", [(p, s, None) for p, s in mols[60:]])
    cfg = _config(tmp_path, folder, steps=3)
    assert main(["fit", "-c", str(cfg)]) == 0
    # a broken file stops the run with its name, or is skipped with skip_bad
    (folder / "c.sdf").write_text("not a molecule\n$$$$\n")
    assert main(["fit", "-c", str(cfg)]) != 0
    assert "c.sdf" in capsys.readouterr().err
    assert main(["fit", "-c", str(cfg),
                 "--model.domain.init_args.skip_bad", "true"]) == 0
    assert "skipped 1 bad molecule records" in capsys.readouterr().err


def test_property_conditioning_on_alpha(qm9_small, tmp_path, capsys):
    from domains.molecules.domain import MoleculeDomain

    domain = MoleculeDomain(data_path=str(qm9_small), context=["alpha"])
    batch = domain.collate([domain.train_dataset()[i] for i in range(32)])
    x0, cond, space = domain.unpack(batch)
    assert cond["context"].shape == (32, 1)
    full = torch.stack([c for _, c in domain.train_dataset()])
    assert abs(float(full.mean())) < 1e-4  # normalised with the training mean and MAD
    assert abs(float((full - full.mean()).abs().mean()) - 1) < 1e-3

    cfg = _config(tmp_path, qm9_small, steps=4)
    cfg.write_text(cfg.read_text().replace(
        "      max_eval: 50\n", "      max_eval: 50\n      context: [alpha]\n").replace(
        "      layers: 2\n", "      layers: 2\n      context_dim: 1\n"))  # or left out
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    outs = {}
    for alpha in ("50", "90"):
        out = tmp_path / f"a{alpha}"
        assert main(["sample", "--ckpt", ckpt, "--num", "4", "--steps", "4",
                     "--prior", f"alpha={alpha}", "--prior", "num_atoms=12",
                     "--out", str(out), "--no-progress"]) == 0
        outs[alpha] = (out / "molecules.xyz").read_text()
        assert json.loads((out / "meta.json").read_text())["prior"]["alpha"] == int(alpha)
    assert outs["50"] != outs["90"]  # same seed, different condition
    assert main(["sample", "--ckpt", ckpt, "--num", "2", "--prior", "beta=1",
                 "--out", str(tmp_path / "bad"), "--no-progress"]) == 1
    assert "unknown sampling option" in capsys.readouterr().err


def test_edm_nll_terms(qm9_small, tmp_path, capsys):
    from diffplat.targets import Denoiser
    from domains.molecules.domain import MoleculeDomain
    from domains.molecules.egnn import EGNNBackbone

    domain = MoleculeDomain(data_path=str(qm9_small))
    batch = domain.collate([domain.test_dataset()[i] for i in range(10)])
    den = Denoiser(EGNNBackbone(num_features=6, hidden=16, layers=2), "polynomial", "eps")
    terms = domain.likelihood(den, batch, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v).all() and v.shape == (10,) for v in terms.values())
    # at t = 0 the noise (sigma/alpha = 0.003 in normalised units) is far inside the unit
    # bins: clean atom types and charges are recovered with probability ~1
    assert terms["features_t0"].abs().max() < 1e-3
    counts = torch.bincount(batch["batch"])
    hist = domain.size_histogram
    torch.testing.assert_close(terms["size"], -torch.log(hist / hist.sum())[counts].double())
    total = terms["prior"] + terms["diffusion"] + terms["positions_t0"] + \
        terms["features_t0"] + terms["size"]
    torch.testing.assert_close(terms["nll"], total)
    # a size the training histogram never saw has probability 0: infinite NLL, no crash
    from domains.molecules.nll import edm_nll

    x0, cond, space = domain.unpack(batch)
    short = torch.log(hist / hist.sum())[: int(counts.min())]
    size = edm_nll(den, x0, cond, space, 5, True, short)["size"]
    assert torch.isinf(size).all() and (size > 0).all()
    # a flow-matching model (sigma(0) = 0, infinite SNR at t = 0) gets finite terms too:
    # the clamped log-SNR's nearly clean level
    flow = Denoiser(EGNNBackbone(num_features=6, hidden=16, layers=2), "flow", "flow")
    terms = domain.likelihood(flow, batch, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v).all() for v in terms.values()), terms
    # and the CLI reports it on the test split
    cfg = _config(tmp_path, qm9_small, steps=2)
    assert main(["fit", "-c", str(cfg)]) == 0
    assert main(["test", "-c", str(cfg), "--ckpt_path",
                 str(tmp_path / "run" / "checkpoints" / "last.ckpt")]) == 0
    assert "test/nll" in capsys.readouterr().out


def _sulfur_chlorine_sdf(path):
    """A user's SDF with S and Cl, which QM9's vocabulary lacks (RDKit ETKDG geometries)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from domains.molecules.io import write_sdf

    records = []
    for k, smi in enumerate(["CS", "CCS", "CCl", "ClCCl", "CSC", "OCCS", "CC(Cl)C", "SCCO",
                             "CCCl", "NCCS", "CC(=O)Cl", "CSSC", "CCO", "CCC", "CO", "C=CC", "OCCO",
                             "CC(C)O"] * 3):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=k)
        records.append((mol.GetConformer().GetPositions(),
                        [a.GetSymbol() for a in mol.GetAtoms()], None))
    write_sdf(path, records)
    return path


def test_backbone_sizes_follow_the_users_elements(tmp_path, capsys):
    data = _sulfur_chlorine_sdf(tmp_path / "mine.sdf")
    cfg = _config(tmp_path, data, steps=2)
    assert main(["fit", "-c", str(cfg)]) == 0  # no num_features in the config: derived
    from diffplat.training.checkpoint import load_module

    module = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert module.domain.featurizer.elements == ("H", "C", "N", "O", "S", "Cl")
    assert module.backbone.num_features == 7  # six one-hot columns and the charge
    capsys.readouterr()
    assert main(["fit", "-c", str(cfg), "--model.backbone.init_args.num_features", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.backbone.init_args.num_features is 6" in err[0], err
    assert "needs 7" in err[0]


def test_elements_outside_the_vocabulary_are_skipped_and_counted(tmp_path, capsys):
    data = _sulfur_chlorine_sdf(tmp_path / "mine.sdf")
    cfg = _config(tmp_path, data, steps=2)
    cfg.write_text(cfg.read_text().replace("      max_eval: 50\n",
                                           "      max_eval: 50\n      elements: [H, C, O]\n"))
    assert main(["fit", "-c", str(cfg)]) == 2
    assert "outside the vocabulary" in capsys.readouterr().err
    assert main(["fit", "-c", str(cfg), "--model.domain.init_args.skip_bad", "true"]) == 0
    err = capsys.readouterr().err
    # every molecule with S, Cl or N is left out: 3 x 12 of the 54 records
    assert "skipped 36 bad molecule records" in err and "mine.sdf" in err


def test_export_samples_from_an_empty_folder_without_the_data(qm9_small, tmp_path,
                                                             monkeypatch, capsys):
    import shutil

    data = tmp_path / "copy" / "qm9.npz"
    data.parent.mkdir()
    shutil.copy(qm9_small, data)
    cfg = _config(tmp_path, data, steps=3)
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "model")]) == 0
    shutil.rmtree(data.parent)  # the dataset is gone
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for source in (tmp_path / "model", ckpt):
        out = empty / f"s-{source.name}"
        assert main(["sample", "--ckpt", str(source), "--num", "6", "--steps", "4",
                     "--out", str(out), "--no-progress"]) == 0
        assert (out / "molecules.sdf").read_text().count("$$$$") == 6
    capsys.readouterr()
    assert main(["evaluate", "--samples", str(empty / "s-model"), "--json", "m.json"]) == 0
    err = capsys.readouterr().err
    assert "novelty not scored" in err and "diffplat data prepare qm9" in err
    metrics = json.loads((empty / "m.json").read_text())["metrics"]
    assert "mol_stability" in metrics and "novelty" not in metrics
    # the Python API from the same empty folder: sample, write, save, reload
    import diffplat

    pipe = diffplat.load(tmp_path / "model")
    mols = pipe.sample(3, steps=4, num_atoms=7, seed=1)
    assert [len(m.symbols) for m in mols] == [7, 7, 7]
    assert all(np.isfinite(m.positions).all() and m.positions.shape == (7, 3) for m in mols)
    pipe.write(mols, empty / "api")
    assert (empty / "api" / "molecules.sdf").read_text().count("$$$$") == 3
    pipe.save(empty / "saved", command="test")
    again = diffplat.load(empty / "saved").sample(3, steps=4, num_atoms=7, seed=1)
    for a, b in zip(mols, again):
        assert a.symbols == b.symbols
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-5)


def test_onehot_scale_sets_the_type_columns_and_travels_with_the_model(qm9_small):
    """``onehot_scale`` divides the atom-type one-hot (EDM's 4 by default), leaves positions
    and the charge column alone, decodes the same molecules, and is part of the sampling
    state, so a model trained with it samples with it."""
    import pytest

    from domains.molecules.domain import MoleculeDomain

    edm, ones = (MoleculeDomain(str(qm9_small), max_train=20, max_eval=10, onehot_scale=s)
                 for s in (4.0, 1.0))
    for d in (edm, ones):
        d.setup()
    x4, x1 = (d.unpack(d.collate([d.train_dataset()[i] for i in range(5)]))[0]
              for d in (edm, ones))
    torch.testing.assert_close(x1[:, :3], x4[:, :3])           # positions
    torch.testing.assert_close(x1[:, 3:8], 4 * x4[:, 3:8])     # one-hot: 1 instead of 0.25
    torch.testing.assert_close(x1[:, 8:], x4[:, 8:])           # charges / 10
    assert set(x1[:, 3:8].unique().tolist()) == {0.0, 1.0}
    batch = ones.collate([ones.train_dataset()[i] for i in range(5)])
    got = ones.featurizer.decode(x1, batch["batch"], 5)
    want = edm.featurizer.decode(x4, batch["batch"], 5)
    assert [m.symbols for m in got] == [m.symbols for m in want]
    fresh = MoleculeDomain(str(qm9_small))  # the default, restored from the trained state
    fresh.load_sampling_state(ones.sampling_state())
    assert fresh.featurizer.onehot_scale == 1.0
    with pytest.raises(ValueError, match="onehot_scale must be positive"):
        MoleculeDomain(str(qm9_small), onehot_scale=0)
