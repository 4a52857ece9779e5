"""`diffplat conformers` and `diffplat evaluate conformers` end to end on a tiny model."""

import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from diffplat.cli import main
from tests.helpers import CPU_TRAINER

CONFIG = CPU_TRAINER.replace("{steps}", "8") + """
model:
  domain:
    class_path: domains.molecules.conformers.domain.ConformerDomain
    init_args:
      data_path: {data}
      max_train: 64
      max_eval: 8
  backbone:
    class_path: domains.molecules.conformers.backbone.ConformerEGNN
    init_args:
      node_dim: 22
      edge_dim: 11
      hidden: 16
      layers: 2
  schedule: polynomial
  target: eps
  lr: 0.001
  warmup_steps: 2
  batch_size: 16
  sampler: dpmpp_2m
  sample_steps: 4
  sample_num: 0
"""

UNEMBEDDABLE = "[C@@]12([C@H]3[C@H]1[C@H]23)C"  # a tetrahedrane with impossible chirality


@pytest.fixture(scope="module")
def ckpt(qm9_small, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conf")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=tmp / "run", data=qm9_small))
    assert main(["fit", "-c", str(cfg)]) == 0
    return str(tmp / "run" / "checkpoints" / "last.ckpt")


def _records(path):
    return [m for m in Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False)]


def _same_graph(a, b):
    return ([x.GetSymbol() for x in a.GetAtoms()] == [x.GetSymbol() for x in b.GetAtoms()]
            and {(x.GetBeginAtomIdx(), x.GetEndAtomIdx(), x.GetBondType()) for x in a.GetBonds()}
            == {(x.GetBeginAtomIdx(), x.GetEndAtomIdx(), x.GetBondType()) for x in b.GetBonds()})


def test_model_writes_multi_conformer_sdf_in_input_order(ckpt, tmp_path, capsys):
    out = tmp_path / "out.sdf"
    rc = main(["conformers", "--ckpt", ckpt, "--smiles", "CCO", "--smiles", "N[C@@H](C)C=O",
               "-n", "3", "--steps", "4", "--out", str(out)])
    assert rc == 0
    recs = _records(out)
    assert len(recs) == 6
    expected = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in ("CCO", "N[C@@H](C)C=O")]
    for k, rec in enumerate(recs):
        assert rec.GetIntProp("molecule") == k // 3 and rec.GetIntProp("conformer") == k % 3
        assert _same_graph(rec, expected[k // 3])           # hydrogens added after heavy atoms
        pos = rec.GetConformer().GetPositions()
        assert np.isfinite(pos).all() and rec.GetConformer().Is3D()
    # an SDF input with hydrogens interleaved keeps its own atom order
    mol = Chem.AddHs(Chem.MolFromSmiles("OCC#N"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    order = [0, 4, 1, 5, 6, 2, 3]  # O, H(O), C, H, H, C, N
    shuffled = Chem.RenumberAtoms(mol, order)
    Chem.MolToMolFile(shuffled, str(tmp_path / "in.sdf"))
    rc = main(["conformers", "--ckpt", ckpt, "--sdf", str(tmp_path / "in.sdf"), "-n", "2",
               "--steps", "4", "--out", str(tmp_path / "sdf_out.sdf")])
    assert rc == 0
    recs = _records(tmp_path / "sdf_out.sdf")
    assert len(recs) == 2 and all(_same_graph(r, shuffled) for r in recs)
    assert "wrote 2 conformers of 1 molecule(s)" in capsys.readouterr().out


def test_bad_inputs_are_reported_and_the_rest_written(ckpt, tmp_path, capsys):
    out = tmp_path / "out.sdf"
    rc = main(["conformers", "--ckpt", ckpt, "--smiles", "C1CC", "--smiles", "CCO",
               "--smiles", "CCCl", "-n", "2", "--steps", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "molecule 1 (C1CC): unparsable SMILES" in err
    assert "molecule 3 (CCCl): element: element(s) Cl outside the model's vocabulary" in err
    assert "2 of 3 molecule(s) failed" in err
    recs = _records(out)
    assert len(recs) == 2 and all(r.GetProp("_Name") == "CCO" for r in recs)
    # SDF input: a record RDKit cannot read and one outside the vocabulary, between good ones
    good = Chem.MolToMolBlock(Chem.AddHs(Chem.MolFromSmiles("CC=O")))
    bad = "broken\n  nonsense\n\n  3 x\nM  END\n"
    chloro = Chem.MolToMolBlock(Chem.AddHs(Chem.MolFromSmiles("CCl")))
    (tmp_path / "in.sdf").write_text("$$$$\n".join([good, bad, chloro, good]) + "$$$$\n")
    rc = main(["conformers", "--ckpt", ckpt, "--sdf", str(tmp_path / "in.sdf"), "-n", "1",
               "--steps", "3", "--out", str(tmp_path / "sdf.sdf")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "molecule 2 (in.sdf record 2): RDKit cannot parse or sanitise this record" in err
    assert "molecule 3 (in.sdf record 3): element: element(s) Cl outside" in err
    assert len(_records(tmp_path / "sdf.sdf")) == 2


def test_rdkit_baseline_same_interface_and_embedding_failure(tmp_path, capsys):
    out = tmp_path / "rd.sdf"
    rc = main(["conformers", "--baseline", "rdkit", "--mmff", "--smiles", "C[C@H](Cl)CC",
               "--smiles", UNEMBEDDABLE, "--smiles", "not_a_smiles", "-n", "4",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"molecule 2 ({UNEMBEDDABLE}): RDKit could not embed this molecule" in err
    assert "molecule 3 (not_a_smiles): unparsable SMILES" in err
    recs = _records(out)
    assert len(recs) == 4
    from domains.molecules.conformers.metrics import stereo_matches

    ref = Chem.AddHs(Chem.MolFromSmiles("C[C@H](Cl)CC"))
    assert stereo_matches(ref, [r.GetConformer().GetPositions() for r in recs]) == [True] * 4
    assert main(["conformers", "--baseline", "rdkit", "--smiles", "CCO", "-n", "2",
                 "--out", str(tmp_path / "ok.sdf")]) == 0


def test_evaluate_conformers_writes_model_and_rdkit_rows(ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["evaluate", "conformers", "--ckpt", ckpt, "--split", "test", "--num-mols", "3",
               "--baseline", "rdkit", "--steps", "4", "--out", str(out)])
    assert rc == 0
    info = json.loads((out / "metrics.json").read_text())
    assert info["num_mols"] == 3 and info["delta"] == 0.5 and len(info["rows"]) == 4
    assert info["scoring"] == ["td", "legacy"]
    rows = [r for r in info["rows"].values() if r["scoring"] == "legacy"]
    # legacy rows are scored on the molecules both methods handled, td rows on all of them
    assert info["scored"] == {"td": 3, "legacy": 3 - sum(r["failed"] for r in rows)}
    assert [k.endswith("[legacy]") for k in info["rows"]] == [False, False, True, True]
    for row in rows:
        assert row["molecules"] == info["scored"]["legacy"]
        assert 0 <= row["cov_r_mean"] <= 100 and row["mat_r_mean"] >= 0
        assert row["conformers"] == 2 * row["molecules"]  # 2K for K = 1 QM9 reference
    rdkit = next(v for k, v in info["rows"].items() if k.startswith("RDKit"))
    assert rdkit["stereo_match"] == 100.0 or rdkit["stereo_molecules"] == 0
    table = (out / "metrics.md").read_text()
    assert "COV-R mean" in table and "RDKit ETKDGv3" in table
    printed = capsys.readouterr().out
    assert "MAT-R mean" in printed and "paired, model" in printed
    # the paired COV-R difference over all molecules (td) is the difference of the rows' means
    (model_name, model), (rdkit_name, rdkit) = list(info["rows"].items())[:2]
    paired = info["paired"]
    assert paired["model"] == model_name and paired["baseline"] == rdkit_name
    assert paired["cov_r_diff"] == pytest.approx(model["cov_r_mean"] - rdkit["cov_r_mean"])
    assert paired["cov_r_ci_low"] <= paired["cov_r_diff"] <= paired["cov_r_ci_high"]
    assert (info["sampler"], info["steps"]) == ("dpmpp_2m", 4)  # as `evaluate --json` has
    head = info["metrics"]  # the flat headline a model card takes
    assert head["model_mat_r_mean"] == model["mat_r_mean"]
    assert head["baseline_cov_r_mean"] == rdkit["cov_r_mean"] and head["num_mols"] == 3
    import csv

    with open(out / "per_molecule.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 3
    cov = [float(r[f"{model_name} cov_r"]) for r in lines]
    assert 100 * np.mean(cov) == pytest.approx(model["cov_r_mean"])


def test_generic_sample_command_and_validation_metrics(ckpt, tmp_path):
    """`diffplat sample` draws one conformer per validation molecule through the Domain
    hooks (prior, decode, write, preview) and the domain scores them against references."""
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", ckpt, "--num", "4", "--steps", "3", "--no-progress",
                 "--out", str(out)]) == 0
    recs = _records(out / "conformers.sdf")
    assert len(recs) == 4 and (out / "preview.png").stat().st_size > 1000
    from diffplat.training.checkpoint import load_module

    module = load_module(ckpt)
    samples, _ = module.generate(4, steps=3, split="test", copies=2)
    assert samples[0].graph is samples[1].graph and samples[1].graph is not samples[2].graph
    metrics = module.domain.metrics(samples)
    assert metrics["molecules"] == 2 and metrics["conformers"] == 4
    refs = module.domain.reference(2, "test")
    exact = module.domain.metrics(refs)
    assert exact["mat_r_mean"] < 1e-4 and exact["cov_r_mean"] == 100.0


def test_compare_trains_and_scores_a_conformer_model(qm9_small, tmp_path):
    """`diffplat compare` on the conformer domain (configs/compare/conformers-recipe.yaml's
    path): it trains, draws 2 conformers of each validation molecule and records MAT-R,
    with the scoring variant (a string metric) kept as it is."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=tmp_path / "unused", data=qm9_small))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"""out: {tmp_path / 'out'}
seed: 0
grid:
  sampler: [dpmpp_2m]
  nfe: [4]
domains:
  conf:
    config: {cfg}
    num_samples: 8
    metric: mat_r_mean
    goal: min
    sampling: {{split: val, copies: 2}}
""")
    assert main(["compare", "-c", str(grid)]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    (row,) = result["rows"]
    assert row["status"] == "ok" and row["m.scoring"] == "td" and row["m.conformers"] == 8
    from diffplat.training.checkpoint import load_module

    ckpt = next((tmp_path / "out" / "cells").glob("conf-*")) / "run/checkpoints/last.ckpt"
    module = load_module(ckpt)
    samples, _ = module.generate(8, sampler="dpmpp_2m", steps=4, seed=0, split="val",
                                 copies=2)
    assert module.domain.metrics(samples)["mat_r_mean"] == pytest.approx(row["value"],
                                                                         rel=1e-6)


def test_refinement_from_etkdg_at_a_small_level_keeps_the_etkdg_conformers(ckpt, tmp_path):
    """SDEdit from ETKDG (generate(start=...)): at noise level 0.01 one step returns the start
    up to one denoise, so the model row matches the ETKDG row; ETKDG's time is counted."""
    import torch

    from diffplat.training.checkpoint import load_module
    from domains.molecules.conformers.baseline import rdkit_conformers
    from domains.molecules.conformers.graph import mol_to_graph
    from domains.molecules.conformers.sample import model_conformers

    module = load_module(ckpt)
    t = float(module.schedule.t_from_noise_level(torch.tensor(0.01, dtype=torch.float64)))
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in ("CCO", "N[C@@H](C)C=O")]
    graphs = [mol_to_graph(m, module.domain.vocabulary) for m in mols]
    starts = [rdkit_conformers(m, 2) for m in mols]
    out = model_conformers(module, graphs, 3, steps=1, starts=starts, start_t=t)
    for s, o in zip(starts, out):
        for c, conf in enumerate(o):  # copy c starts from ETKDG conformer c % 2, centred
            ref = s[c % 2] - s[c % 2].mean(0)
            assert np.abs(conf - ref).max() < 0.1
            assert np.abs(conf - ref).max() > 0  # it went through the network
    far = model_conformers(module, graphs, 2, steps=4, starts=starts, start_t=1.0)
    assert np.abs(far[0][0] - (starts[0][0] - starts[0][0].mean(0))).max() > 0.2
    with pytest.raises(ValueError, match="give both starts and start_t"):
        model_conformers(module, graphs, 1, starts=starts)

    out_dir = tmp_path / "refine"
    assert main(["evaluate", "conformers", "--ckpt", ckpt, "--num-mols", "3", "--steps", "1",
                 "--baseline", "rdkit", "--refine-from", "etkdg", "--noise-level", str(t),
                 "--scoring", "td", "--out", str(out_dir)]) == 0
    info = json.loads((out_dir / "metrics.json").read_text())
    assert info["refine"]["from"] == "etkdg" and info["refine"]["t"] == t
    (name, model), (_, rdkit) = info["rows"].items()
    assert f"from ETKDG at t = {t}" in name
    assert model["failed"] == rdkit["failed"]  # no ETKDG start, no refined conformer
    assert abs(model["mat_r_mean"] - rdkit["mat_r_mean"]) < 0.05
    for bad in (["--refine-from", "etkdg"], ["--noise-level", "0.5"],
                ["--refine-from", "etkdg", "--noise-level", "1.5"]):
        with pytest.raises(SystemExit):
            main(["evaluate", "conformers", "--ckpt", ckpt, *bad])
