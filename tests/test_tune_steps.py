"""Fitted step schedules: the fit itself on exact scores, and ``diffplat tune-steps`` /
``sample --spacing fitted`` end to end on a tiny toy model."""

import json

import numpy as np
import pytest
import torch

from diffplat import samplers, schedules
from diffplat.cli import main
from diffplat.samplers.grids import noise_levels
from diffplat.samplers.tuning import fit_levels
from diffplat.training.checkpoint import load_module, step_schedules_path
from domains.toy import ExactDenoiser, GaussianMixture
from tests.helpers import write_config


def _noise(n, seed):
    return torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_fitted_levels_beat_the_start_grid_on_held_out_noise():
    sched, mix = schedules.get("linear"), GaussianMixture.default()
    den = ExactDenoiser(mix, sched)
    fit = fit_levels(samplers.get("unipc"), [(den, _noise(300, 1), None)], sched, 5,
                     {"spacing": "karras"}, reference_steps=150, max_evals=150)
    levels = fit["levels"]
    assert len(levels) == 6 and levels[-1] == 0 and levels[0] == 80.0
    assert np.all(np.diff(levels) < 0)
    assert fit["objective"] < 0.5 * fit["initial"]
    # judged on other noise, against an accurate solve of the same ODE
    test = _noise(500, 2)
    ref = samplers.get("unipc")(den, test, sched, 300, spacing="karras")
    tuned = samplers.get("unipc")(den, test, sched, 5, levels=levels)
    start = samplers.get("unipc")(den, test, sched, 5, levels=noise_levels(sched, 5, "karras"))
    assert float((tuned - ref).norm()) < 0.6 * float((start - ref).norm())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    cfg = write_config(tmp / "cfg.yaml", tmp / "run", max_steps=20, ckpt_every=20)
    assert main(["fit", "-c", str(cfg)]) == 0
    return tmp / "run" / "checkpoints" / "last.ckpt"


def test_tune_steps_then_sample_with_the_fitted_grid(ckpt, tmp_path, capsys):
    fast = ["--batches", "1", "--batch-size", "64", "--max-evals", "30",
            "--reference-steps", "40"]
    assert main(["tune-steps", "--ckpt", str(ckpt), "--sampler", "deis", "--nfe", "5",
                 *fast]) == 0
    stored = json.loads(step_schedules_path(ckpt).read_text())
    entry = stored["schedules"]["deis/5"]
    assert len(entry["levels"]) == 6 and entry["objective"] <= entry["initial_objective"]
    assert "wrote the fitted 5-step schedule of deis" in capsys.readouterr().out

    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "50", "--sampler", "deis", "--nfe",
                 "5", "--spacing", "fitted", "--no-progress", "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["options"]["levels"] == entry["levels"] and meta["nfe"] == 5
    module = load_module(ckpt)
    want, _ = module.generate(50, sampler="deis", steps=5, seed=0,
                              sampler_options={"levels": entry["levels"]})
    got = np.load(out / "samples.npy")
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)

    # an export folder carries the schedules
    exp = tmp_path / "exp"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(exp)]) == 0
    assert main(["sample", "--ckpt", str(exp), "--num", "10", "--sampler", "deis", "--nfe",
                 "5", "--spacing", "fitted", "--no-progress", "--out", str(tmp_path / "e")]) == 0


def test_missing_schedule_and_bad_input_are_one_line_errors(ckpt, tmp_path, capsys):
    cases = [
        (["sample", "--ckpt", str(ckpt), "--num", "5", "--sampler", "unipc", "--nfe", "7",
          "--spacing", "fitted", "--out", str(tmp_path / "x")],
         f"make one with `diffplat tune-steps --ckpt {ckpt} --sampler unipc --nfe 7`"),
        (["tune-steps", "--ckpt", str(ckpt), "--sampler", "unipc", "--nfe", "0"],
         "--nfe must be an integer >= 1"),
        (["tune-steps", "--ckpt", str(ckpt), "--sampler", "unipcc", "--nfe", "5"],
         "unknown sampler 'unipcc'; valid names:"),
        (["tune-steps", "--ckpt", str(ckpt), "--sampler", "ddpm", "--nfe", "5"],
         "needs a deterministic fixed-step sampler"),
        (["sample", "--ckpt", str(ckpt), "--num", "5", "--nfe", "0", "--out", str(tmp_path)],
         "--nfe must be an integer >= 1"),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def test_schedules_of_other_weights_are_refused(ckpt, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy.ckpt"
    shutil.copy(ckpt, copy)
    shutil.copy(step_schedules_path(ckpt), step_schedules_path(copy))
    state = torch.load(copy, weights_only=True)
    state["global_step"] += 1  # another version of the file
    torch.save(state, copy)
    assert main(["sample", "--ckpt", str(copy), "--num", "5", "--sampler", "deis", "--nfe",
                 "5", "--spacing", "fitted", "--out", str(tmp_path / "y")]) == 1
    assert "belong to other weights" in capsys.readouterr().err


def test_auto_is_the_default_of_sample(ckpt, tmp_path):
    out = tmp_path / "a"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "20", "--nfe", "10", "--no-progress",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    name, _ = samplers.auto.choose(10, schedules.get("cosine"))  # the test model's schedule
    assert meta["requested_sampler"] == "auto" and meta["sampler"] == name
    assert meta["nfe"] == 10
