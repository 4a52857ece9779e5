"""The diffplat command end to end on the toy: fit, resume, sample, evaluate, export."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffplat import samplers
from diffplat.cli import main
from diffplat.training.checkpoint import build_module, load_module
from tests.helpers import state_equal, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run shared by the tests below."""
    tmp = tmp_path_factory.mktemp("fit")
    cfg = write_config(tmp / "cfg.yaml", tmp / "run", max_steps=40, ckpt_every=20)
    assert main(["fit", "-c", str(cfg)]) == 0
    return tmp / "run"


def test_fit_writes_a_safe_checkpoint_with_the_full_config(trained):
    ckpt_path = trained / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)  # no arbitrary unpickling
    assert ckpt["global_step"] == 40
    run_config = ckpt["diffplat"]["run_config"]
    assert run_config["trainer"]["max_steps"] == 40
    assert run_config["model"]["backbone"]["class_path"] == "domains.toy.MLPBackbone"
    assert (trained / "config.yaml").is_file()
    module = load_module(ckpt_path)
    assert state_equal(module.state_dict(), ckpt["state_dict"])


def test_sample_is_reproducible_and_evaluate_writes_json(trained, tmp_path):
    ckpt = str(trained / "checkpoints" / "last.ckpt")
    common = ["--ckpt", ckpt, "--num", "300", "--sampler", "dpmpp_2m", "--steps", "8",
              "--no-progress"]
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert main(["sample", *common, "--seed", seed, "--out", str(tmp_path / name)]) == 0
    a, b, c = (np.load(tmp_path / n / "samples.npy") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert (tmp_path / "a" / "preview.png").stat().st_size > 1000
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["nfe"] == 8 and meta["sampler"] == "dpmpp_2m"

    out = tmp_path / "m.json"
    assert main(["evaluate", "--samples", str(tmp_path / "a"), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["num"] == 300 and metrics["mmd2"] > 0 and metrics["w2"] > 0

    ref = tmp_path / "ref.json"
    assert main(["evaluate", "--ckpt", ckpt, "--reference", "--num", "256",
                 "--json", str(ref)]) == 0
    ref_metrics = json.loads(ref.read_text())["metrics"]
    # the reference data is exact: its MMD to the mixture is at the noise floor, below the
    # 40-step model's
    assert abs(ref_metrics["mmd2"]) < 0.005
    assert metrics["mmd2"] > ref_metrics["mmd2"]


def test_training_learns_the_mixture(trained):
    """40 tiny steps already beat the untrained network on the exact MMD."""
    module = load_module(trained / "checkpoints" / "last.ckpt")
    trained_mmd = module.domain.metrics(module.generate(500, steps=10)[0])["mmd2"]
    fresh = build_module(dict(module.hparams))
    fresh_mmd = fresh.domain.metrics(fresh.generate(500, steps=10)[0])["mmd2"]
    assert trained_mmd < 0.5 * fresh_mmd


def test_export_loads_without_pickles_and_samples_identically(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    assert {p.name for p in (tmp_path / "exp").iterdir()} == {"model.safetensors",
                                                              "config.json"}
    a = load_module(ckpt).generate(64, sampler="heun", steps=5, seed=3)[0]
    b = load_module(tmp_path / "exp").generate(64, sampler="heun", steps=5, seed=3)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_card_records_the_sampler_options_its_figures_used(trained, tmp_path, capsys):
    """evaluate --json records -o options and --spacing; export carries them into the card's
    measured_with, and sampling with them repeats evaluate's samples exactly."""
    import diffplat

    ckpt = trained / "checkpoints" / "last.ckpt"
    metrics = tmp_path / "m.json"
    how = ["--sampler", "euler_anneal", "--steps", "6", "--spacing", "arcsin", "-o",
           "level_min=0.01", "--seed", "2"]
    assert main(["evaluate", "--ckpt", str(ckpt), "--num", "32", *how, "--json",
                 str(metrics)]) == 0
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "m"), "--name", "m",
                 "--metrics", str(metrics)]) == 0
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    got = card["measured_with"]
    assert {k: got[k] for k in ("sampler", "steps", "spacing", "sampler_options")} == {
        "sampler": "euler_anneal", "steps": 6, "spacing": "arcsin",
        "sampler_options": {"level_min": 0.01}}
    pipe = diffplat.load(tmp_path / "m")
    a = pipe.sample(8, sampler=got["sampler"], steps=got["steps"], spacing=got["spacing"],
                    options=got["sampler_options"], seed=2)
    b = pipe.sample(8, sampler=got["sampler"], steps=got["steps"], seed=2)
    c = pipe.sample(8, sampler=got["sampler"], steps=got["steps"], spacing=got["spacing"],
                    options=got["sampler_options"], seed=2)
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(c))
    assert not torch.equal(torch.as_tensor(a), torch.as_tensor(b))  # the options matter


def test_export_with_a_model_card(trained, tmp_path, capsys):
    """The form of a shipped model: export + card from the checkpoint's record and
    `diffplat evaluate --json`; diffplat.load reads the card back."""
    import diffplat

    ckpt = trained / "checkpoints" / "last.ckpt"
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"metrics": {"mmd2": 0.0123, "n": 10}, "sampler": "heun",
                                   "steps": 18, "guidance": 3.0, "prior": {},
                                   "seconds": 1.5}))
    out = tmp_path / "toy-model"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--name", "toy-model",
                 "--metrics", str(metrics), "--metrics-command", "diffplat evaluate x",
                 "--notes", "falls short"]) == 0
    card = json.loads((out / "card.json").read_text())
    steps = torch.load(ckpt, weights_only=True)["global_step"]
    assert card["name"] == "toy-model" and card["steps"] == steps
    assert card["metrics"] == {"mmd2": 0.0123, "n": 10} and card["domain"] == "toy"
    # how the metrics were sampled, so a check can sample the same way (empty ones left out)
    assert card["measured_with"] == {"sampler": "heun", "steps": 18, "guidance": 3.0}
    text = (out / "MODEL_CARD.md").read_text()
    assert "| mmd2 | 0.0123 |" in text and "`diffplat evaluate x`" in text
    assert "falls short" in text and "Sampling: sampler heun, steps 18, guidance 3.0." in text
    assert diffplat.load(out).card == card
    metrics.write_text("[1, 2]")
    with pytest.raises(SystemExit):
        main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "b"), "--metrics",
              str(metrics)])
    assert "holds no metrics object" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # refused before writing anything


def test_resume_is_exact(tmp_path):
    """20 steps + resume to 40 == 40 steps straight: weights, EMA and optimizer state."""
    decay = "  decay_steps: 40\n"  # the default would follow max_steps, which differs here
    straight = write_config(tmp_path / "a.yaml", tmp_path / "a", max_steps=40, ckpt_every=20,
                            extra=decay)
    assert main(["fit", "-c", str(straight)]) == 0
    half = write_config(tmp_path / "b.yaml", tmp_path / "b", max_steps=20, ckpt_every=20,
                        extra=decay)
    assert main(["fit", "-c", str(half)]) == 0
    assert main(["fit", "-c", str(half), "--trainer.max_steps", "40",
                 "--ckpt_path", "last"]) == 0
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 40
    assert state_equal(a["state_dict"], b["state_dict"])
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(state_equal(sa[k], sb[k]) for k in sa)


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, capsys):
    extra = "\n".join([
        "  backbone:", "    class_path: tests.helpers.NaNBackbone",
        "    init_args: {hidden: 32, depth: 2, nan_from: 13}", ""])
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "r", max_steps=40, ckpt_every=5)
    text = cfg.read_text().replace(
        "  backbone:\n    class_path: domains.toy.MLPBackbone\n    init_args:\n"
        "      hidden: 32\n      depth: 2\n", extra)
    cfg.write_text(text)
    assert main(["fit", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at step 12" in err[0], err
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if v.is_floating_point())
    # with on_nonfinite=skip the run finishes and counts the skipped batches (28 of 40 here,
    # past the default max_skipped_fraction, which test_run_safety.py checks)
    assert main(["fit", "-c", str(cfg), "--model.on_nonfinite", "skip",
                 "--model.max_skipped_fraction", "1",
                 "--trainer.default_root_dir", str(tmp_path / "s")]) == 0
    ckpt = torch.load(tmp_path / "s" / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(ckpt["state_dict"]["skipped_batches"]) > 0


@pytest.mark.parametrize("override,needle", [
    (["--model.lr", "fast"], "model.lr"),
    (["--model.batch_sise", "3"], "batch_sise"),
    (["--model.sampler", "dpm++"], "dpm++"),
    (["--model.domain.init_args.data_path", "/nonexistent/gmm.npz"], "/nonexistent/gmm.npz"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys, override, needle):
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "r", max_steps=2)
    code = main(["fit", "-c", str(cfg), *override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("cmd", ["fit", "sample", "evaluate", "export", "data", "compare"])
def test_every_subcommand_has_help(cmd):
    proc = subprocess.run([sys.executable, "-m", "diffplat.cli", cmd, "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower() and len(proc.stdout) > 200


def test_data_prepare_and_info(tmp_path, capsys):
    assert main(["data", "prepare", "toy", "--out", str(tmp_path), "-o", "num_train=500"]) == 0
    assert main(["data", "info", "toy", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["train_size"] == 500 and info["dim"] == 2
    assert main(["data", "info", "nosuchdomain"]) == 1


def test_validate_and_test_subcommands_report_metrics(trained, tmp_path, capsys):
    cfg = trained.parent / "cfg.yaml"
    ckpt = str(trained / "checkpoints" / "last.ckpt")
    for cmd in ("validate", "test"):
        assert main([cmd, "-c", str(cfg), "--ckpt_path", ckpt]) == 0
        out = capsys.readouterr().out
        assert f"{'val' if cmd == 'validate' else 'test'}/mmd2" in out
        assert f"{'val' if cmd == 'validate' else 'test'}/loss" in out


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    cfg = write_config(tmp_path / "b.yaml", tmp_path / "run", max_steps=10, ckpt_every=10)
    assert main(["fit", "-c", str(cfg), "--trainer.precision", "bf16-mixed"]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 10


def test_sample_inpaint_keeps_the_known_dimension_and_guidance_needs_a_condition(
        trained, tmp_path, capsys):
    ckpt = str(trained / "checkpoints" / "last.ckpt")
    point = tmp_path / "point.npy"
    np.save(point, np.array([[1.5, -0.25]], dtype=np.float32))
    out = tmp_path / "inp"
    assert main(["sample", "--ckpt", ckpt, "--num", "64", "--steps", "6", "--no-progress",
                 "--sampler", "dpmpp_2m",
                 "--inpaint", str(point), "--mask", "0", "--resample", "2",
                 "--out", str(out)]) == 0
    x = np.load(out / "samples.npy")
    assert np.all(x[:, 0] == np.float32(1.5))        # the known coordinate, exactly
    assert np.isfinite(x).all() and x[:, 1].std() > 0  # the other one is generated
    meta = json.loads((out / "meta.json").read_text())
    assert meta["inpaint"] == [str(point), "0"]
    assert meta["nfe"] == 2 * samplers.nfe_for_steps("dpmpp_2m", 6)  # two calls per step

    assert main(["sample", "--ckpt", ckpt, "--num", "4", "--no-progress", "--inpaint",
                 str(point), "--mask", "5", "--out", str(tmp_path / "bad")]) != 0
    assert "--mask '5'" in capsys.readouterr().err
    assert main(["sample", "--ckpt", ckpt, "--num", "4", "--no-progress", "--guidance", "2",
                 "--out", str(tmp_path / "cfg")]) != 0
    assert "no null condition" in capsys.readouterr().err


def test_library_fit_returns_the_checkpoint_and_raises_on_failure(tmp_path):
    from diffplat.training import fit

    cfg = write_config(tmp_path / "c.yaml", tmp_path / "run", max_steps=4)
    ckpt = fit(cfg)
    assert ckpt == tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4
    assert torch.load(fit(cfg, "--trainer.max_steps", "6", ckpt_path="last"),
                      weights_only=True)["global_step"] == 6
    from jsonargparse import ArgumentError

    with pytest.raises(ArgumentError, match="model.lr"):
        fit(cfg, "--model.lr", "fast")


def test_the_readme_python_lines_run(trained, tmp_path, monkeypatch):
    """The README's Python block that loads a checkpoint, on the toy model of this module."""
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    block = next(b for b in blocks if "runs/demo/checkpoints/last.ckpt" in b)
    assert "diffplat.load(" in block and ".sample(" in block
    monkeypatch.chdir(tmp_path)
    block = block.replace("runs/demo/checkpoints/last.ckpt",
                          str(trained / "checkpoints" / "last.ckpt"))
    exec(compile(block, "README.md", "exec"), {})
    assert np.load(tmp_path / "samples" / "samples.npy").shape == (100, 2)
    assert (tmp_path / "samples" / "preview.png").is_file()
