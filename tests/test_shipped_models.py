"""Every model shipped under models/ samples from an empty folder and meets its card.

A shipped model's card (card.json) records the metrics measured by the command in its
``metrics_command``. Here a fresh draw, smaller and with another seed, is scored the same way
and must agree with the card within sampling noise (three standard errors), so a change that
breaks a shipped model - its weights, its configuration, the sampler it names or the domain
code that decodes it - fails this test.
"""

import math

import pytest
import torch

import diffplat
from diffplat.cli import main
from diffplat.models import card, shipped

MODELS = sorted(shipped())


def test_shipped_models_are_small_and_complete():
    """The issue's budget: all shipped weights together at most 25 MB; every card names its
    data, command, steps, wall time, device and metrics."""
    total = 0
    for name, folder in shipped().items():
        total += sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        info = card(name)
        for key in ("data", "data_license", "command", "steps", "train_seconds", "device",
                    "metrics", "metrics_command"):
            assert info.get(key) not in (None, "", {}), f"{name}: card lacks {key}"
    assert total <= 25 * 2**20


def _one_nna_tolerance(value_pct: float, n: int) -> float:
    """Three standard errors of 1-NNA (%) over 2n leave-one-out classifications."""
    p = min(max(value_pct / 100, 0.05), 0.95)
    return 300 * math.sqrt(p * (1 - p) / (2 * n))


def _check_shapes(pipe, info, tmp_path, monkeypatch):
    n = 90
    monkeypatch.chdir(tmp_path)
    assert main(["data", "prepare", "shapes"]) == 0  # procedural and seeded: the same set
    # the sampler, steps and grid the card's metrics were measured with
    how = info["measured_with"]
    clouds = pipe.sample(n, sampler=how["sampler"], steps=how["steps"], seed=12345,
                         spacing=how.get("spacing"), options=how.get("sampler_options"))
    assert clouds.points.shape == (n, pipe.domain.num_points, 3)
    assert torch.isfinite(clouds.points).all()
    pipe.domain.emd = "none"  # the card's headline is Chamfer; EMD is slow on a CPU
    got = pipe.metrics(clouds)["1nna_cd"]
    want = info["metrics"]["1nna_cd"]
    tol = _one_nna_tolerance(want, n)
    assert abs(got - want) <= tol, f"1-NNA-CD {got:.1f}% vs the card's {want:.1f}% (+-{tol:.1f})"


def _check_audio(pipe, info, tmp_path, monkeypatch):
    """40 guided clips (4 per digit), sampled as the card's were (its measured_with): the
    asked digit recognised within three standard errors of the card's rate, by the
    classifier the export carries (assets/), and IS above the issue's goal of 6 less its
    small-sample slack."""
    n = 40
    how = info["measured_with"]
    monkeypatch.chdir(tmp_path)
    assert main(["data", "prepare", "digits"]) == 0  # FID/NDB compare with the train clips
    clips = pipe.sample(n, sampler=how["sampler"], steps=how["steps"],
                        guidance=how.get("guidance"), seed=12345)
    got = pipe.metrics(clips)
    want = info["metrics"]["accuracy"]
    p = min(max(want, 0.05), 0.95)
    tol = 3 * math.sqrt(p * (1 - p) / n)
    assert abs(got["accuracy"] - want) <= tol, (got, want)
    assert got["is"] > 5.0, got  # the card: 7.48 on 200; a broken model is near 1 to 3


def _check_property(pipe, info, prop):
    """A property-conditional model (EDM's property-MAE protocol): 100 molecules sampled as
    the card's were, with (size, property) pairs drawn from its training molecules, scored
    by the predictor its export carries; the MAE within three standard errors (over these
    molecules) of the card's, and below the card's #Atoms row when the card's is."""
    import numpy as np

    from domains.molecules.property import load_predictor, predict

    n, how, m = 100, info["measured_with"], info["metrics"]
    mols = pipe.sample(n, sampler=how["sampler"], steps=how["steps"], seed=12345,
                       spacing=how.get("spacing"), options=how.get("sampler_options"))
    asked = np.array([mol.properties[prop] for mol in mols])
    err = np.abs(predict(load_predictor(pipe.domain.property_predictor), mols) - asked)
    tol = 3 * err.std(ddof=1) / math.sqrt(n)
    want = m[f"{prop}_mae"]
    assert abs(err.mean() - want) <= tol, f"{prop} MAE {err.mean():.2f} vs the card's {want:.2f}"
    if want < m[f"{prop}_mae_num_atoms"]:
        assert err.mean() < m[f"{prop}_mae_num_atoms"] + tol / 3, err.mean()


def _check_molecules(pipe, info, tmp_path, monkeypatch):
    """100 molecules sampled as the card's were: atom stability, molecule stability and
    validity each within three standard errors of the card's (binomial over molecules, a
    loose bound for atom stability, whose atoms are not independent). Needs no data."""
    n = 100
    how = info["measured_with"]
    monkeypatch.chdir(tmp_path)
    if pipe.domain.context:
        for prop in pipe.domain.context:
            _check_property(pipe, info, prop)
        return
    mols = pipe.sample(n, sampler=how["sampler"], steps=how["steps"], seed=12345,
                       spacing=how.get("spacing"), options=how.get("sampler_options"))
    got = pipe.metrics(mols)
    for key in ("atom_stability", "mol_stability", "validity"):
        want = info["metrics"][key]
        p = min(max(want, 0.05), 0.95)
        tol = 3 * math.sqrt(p * (1 - p) / n)
        assert abs(got[key] - want) <= tol, f"{key} {got[key]:.3f} vs the card's {want:.3f}"


def _check_conformers(pipe, info, tmp_path, monkeypatch):
    """The card's `diffplat evaluate conformers` on the first 100 of its test molecules: the
    refined and ETKDG rows within three standard errors of the card's, and the paired MAT-R
    difference on the same molecules below zero (the refiner improves on ETKDG)."""
    import json

    n = 100
    m, how = info["metrics"], info["measured_with"]
    monkeypatch.chdir(tmp_path)
    assert main(["data", "prepare", "qm9"]) == 0
    args = ["evaluate", "conformers", "--model", info["name"], "--split", "test",
            "--num-mols", str(n), "--baseline", "rdkit", "--sampler", how["sampler"],
            "--steps", str(how["steps"]),
            "--scoring", "td", "--out", "eval"]
    if how.get("refine"):
        args += ["--refine-from", how["refine"]["from"], "--noise-level",
                 str(how["refine"]["t"])] + (["--mmff"] if how["refine"].get("mmff") else [])
    assert main(args) == 0
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    for who in ("model", "baseline"):
        cov, want = got[f"{who}_cov_r_mean"], m[f"{who}_cov_r_mean"]
        p = min(max(want / 100, 0.05), 0.95)
        tol = 300 * math.sqrt(p * (1 - p) / n)
        assert abs(cov - want) <= tol, f"{who} COV-R {cov:.1f}% vs the card's {want:.1f}%"
        mat, want = got[f"{who}_mat_r_mean"], m[f"{who}_mat_r_mean"]
        assert abs(mat - want) <= 3 * 0.3 / math.sqrt(n), f"{who} MAT-R {mat:.3f} vs {want:.3f}"
    if how.get("refine"):
        assert got["paired_mat_r_diff"] < 0 and got["paired_mat_r_ci_high"] < 0.005, got


CHECKS = {"shapes": _check_shapes, "conformers": _check_conformers, "audio": _check_audio,
          "molecules": _check_molecules}


@pytest.mark.parametrize("name", MODELS)
def test_a_shipped_model_samples_and_meets_its_card(name, tmp_path, monkeypatch):
    pipe = diffplat.load(name)
    info = pipe.card
    assert info and info["domain"] == pipe.domain.name
    check = CHECKS.get(pipe.domain.name)
    assert check is not None, f"no card check for the {pipe.domain.name} domain"
    check(pipe, info, tmp_path, monkeypatch)
