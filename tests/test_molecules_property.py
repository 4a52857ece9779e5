"""EDM's property-MAE protocol (domains/molecules/property.py): the halves, the predictor,
the reference rows and the evaluation command."""

import json

import numpy as np
import pytest
import torch

from diffplat.cli import main
from domains.molecules.qm9 import N_MOLECULES, edm_split, edm_train_halves
from tests.helpers import CPU_TRAINER


def test_halves_split_the_training_split_as_edm_does():
    first, second = edm_train_halves(N_MOLECULES)
    assert len(first) == len(second) == 50_000
    assert not set(first.tolist()) & set(second.tolist())
    train = np.nonzero(edm_split(N_MOLECULES) == 0)[0]
    assert set(first.tolist()) | set(second.tolist()) == set(train.tolist())
    # EDM's order: cormorant's seed-0 permutation, permuted again with seed 42
    np.random.seed(0)
    order = np.random.permutation(N_MOLECULES)[:100_000]
    np.random.seed(42)
    fixed = np.random.permutation(100_000)
    np.testing.assert_array_equal(first, order[fixed[:50_000]])
    np.testing.assert_array_equal(second, order[fixed[50_000:]])


def test_a_subset_cache_keeps_the_halves_of_the_full_set(qm9_small):
    from domains.molecules.qm9 import load_qm9

    cache = load_qm9(qm9_small)
    first, second = cache.edm_half(0), cache.edm_half(1)
    train = set(cache.split_indices("train").tolist())
    assert set(first.tolist()) | set(second.tolist()) == train
    assert not set(first.tolist()) & set(second.tolist())
    assert 0.4 < len(first) / len(train) < 0.6  # a random subset keeps about half


PREDICTOR = """
seed_everything: 0
trainer:
  max_steps: {steps}
  max_epochs: -1
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  check_val_every_n_epoch: 1000
  logger: false
  default_root_dir: {root}
model:
  class_path: domains.molecules.property.PropertyPredictor
  init_args:
    data_path: {data}
    property: alpha
    hidden: 16
    layers: 2
    batch_size: 32
    lr: 0.003
    max_eval: 100
"""

GENERATOR = CPU_TRAINER + """
model:
  domain:
    class_path: domains.molecules.domain.MoleculeDomain
    init_args:
      data_path: {data}
      max_eval: 50
      context: [alpha]
      train_subset: edm_second_half
  backbone:
    class_path: domains.molecules.egnn.EGNNBackbone
    init_args: {{hidden: 16, layers: 2}}
  schedule: polynomial
  target: eps
  batch_size: 16
  sampler: dpmpp_2m
  sample_steps: 6
  sample_num: 0
"""


def test_predictor_trains_and_the_evaluation_prints_edms_rows(qm9_small, tmp_path, capsys):
    from domains.molecules.property import load_predictor, predict, reference_rows
    from domains.molecules.qm9 import load_qm9

    cfg = tmp_path / "pred.yaml"
    cfg.write_text(PREDICTOR.format(steps=30, root=tmp_path / "pred", data=qm9_small))
    assert main(["fit", "-c", str(cfg)]) == 0
    pred_ckpt = tmp_path / "pred" / "checkpoints" / "last.ckpt"
    predictor = load_predictor(pred_ckpt)
    cache = load_qm9(qm9_small)
    ref = reference_rows(predictor, cache, "alpha", num=400)
    # #Atoms is the median per atom count: on real QM9 it is far below the naive row
    assert ref["num_atoms"] < 0.7 * ref["naive_upper_bound"]
    # the median per count is the L1-best function of the count on the first half
    first = cache.edm_half(0)
    values, counts = cache.arrays["alpha"][first], cache.arrays["n_atoms"][first]
    med = {n: np.median(values[counts == n]) for n in np.unique(counts)}
    best = np.mean([abs(v - med[n]) for v, n in zip(values, counts)])
    shifted = np.mean([abs(v - med[n] - 0.5) for v, n in zip(values, counts)])
    assert best < shifted
    # predictions are in Bohr^3 and invariant to rotating a molecule
    from domains.molecules.features import Molecule

    row = int(first[0])
    pos, _ = cache.molecule(row)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    mols = [Molecule(pos, cache.symbols(row)), Molecule(pos @ q.numpy().T, cache.symbols(row))]
    a, b = predict(predictor, mols)
    assert abs(a - b) < 1e-3 * max(1.0, abs(a))

    gen_cfg = tmp_path / "gen.yaml"
    gen_cfg.write_text(GENERATOR.format(steps=3, root=tmp_path / "gen", data=qm9_small))
    assert main(["fit", "-c", str(gen_cfg)]) == 0
    out = tmp_path / "table.json"
    capsys.readouterr()
    assert main(["evaluate", "property", "--ckpt", str(tmp_path / "gen" / "checkpoints" /
                                                     "last.ckpt"),
                 "--predictor", str(pred_ckpt), "--num", "12", "--steps", "4",
                 "--data", str(qm9_small), "--reference-num", "200", "--json", str(out),
                 "--no-progress"]) == 0
    table = json.loads(out.read_text())
    assert set(table["rows"]) == {"Naive (upper bound)", "#Atoms", "this model",
                                  "QM9 (lower bound)"}
    assert table["molecules"] == 12 and table["published"]["#Atoms"] == 3.86
    assert "this model" in capsys.readouterr().out

    # an export carries the predictor (``--asset``) and is scored with it by default: the
    # same table as naming it, and a card that keeps the headline and how it was sampled
    gen_ckpt = str(tmp_path / "gen" / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit):
        main(["export", "--ckpt", gen_ckpt, "--out", str(tmp_path / "bad"),
              "--asset", f"predictor={pred_ckpt}"])
    assert "has no option 'predictor'" in capsys.readouterr().err
    assert main(["export", "--ckpt", gen_ckpt, "--out", str(tmp_path / "exp"), "--name", "a",
                 "--metrics", str(out), "--asset", f"property_predictor={pred_ckpt}"]) == 0
    card = json.loads((tmp_path / "exp" / "card.json").read_text())
    assert card["metrics"]["alpha_mae"] == table["rows"]["this model"]
    assert card["measured_with"]["steps"] == 4
    assert (tmp_path / "exp" / "assets" / "property_predictor.ckpt").is_file()
    again = tmp_path / "again.json"
    assert main(["evaluate", "property", "--ckpt", str(tmp_path / "exp"), "--num", "12",
                 "--steps", "4", "--data", str(qm9_small), "--reference-num", "200",
                 "--json", str(again), "--no-progress"]) == 0
    second = json.loads(again.read_text())
    assert second["predictor"].endswith("assets/property_predictor.ckpt")
    assert second["rows"] == pytest.approx(table["rows"], rel=1e-4)
    with pytest.raises(SystemExit):  # a model without one needs --predictor
        main(["evaluate", "property", "--ckpt", gen_ckpt, "--num", "2", "--no-progress"])
    assert "give --predictor" in capsys.readouterr().err


def test_paired_difference_against_num_atoms_by_hand():
    """The model's error minus #Atoms' on the same molecules, checked by hand: a model that
    returns the #Atoms median for each size has difference 0 exactly; one that is exact has
    minus #Atoms' MAE; the intervals hold the means and shrink with more molecules."""
    from domains.molecules.property import paired_against_num_atoms

    medians = ({9: 60.0, 18: 80.0}, 75.0)  # size 12 is unseen: the overall median
    counts = np.array([9, 18, 12, 9])
    asked = np.array([62.0, 70.0, 71.0, 59.0])
    by_atoms = np.array([60.0, 80.0, 75.0, 60.0])
    same = paired_against_num_atoms(by_atoms, asked, counts, medians)
    assert same["diff"] == 0.0 and same["diff_ci_low"] == same["diff_ci_high"] == 0.0
    assert same["num_atoms_mae"] == pytest.approx((2 + 10 + 4 + 1) / 4)
    exact = paired_against_num_atoms(asked, asked, counts, medians)
    assert exact["mae"] == 0.0 and exact["diff"] == pytest.approx(-17 / 4)
    assert exact["diff_ci_low"] <= exact["diff"] <= exact["diff_ci_high"] <= 0
    rng = np.random.default_rng(0)
    big = rng.normal(size=400)
    small = paired_against_num_atoms(big[:40], np.zeros(40), np.full(40, 9), ({9: 0.0}, 0.0))
    wide = paired_against_num_atoms(big, np.zeros(400), np.full(400, 9), ({9: 0.0}, 0.0))
    assert wide["mae_ci_high"] - wide["mae_ci_low"] < small["mae_ci_high"] - small["mae_ci_low"]
    assert wide["mae_ci_low"] < np.abs(big).mean() < wide["mae_ci_high"]
