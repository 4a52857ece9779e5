"""``diffplat compare`` on a tiny toy grid: validation, results, failures, resume."""

import csv
import json
from pathlib import Path

import pytest
import torch

from diffplat.cli import main
from diffplat.compare.grid import GridError, load_grid
from diffplat.training.checkpoint import load_module
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parents[1]


def _grid(tmp: Path, domains: str, grid: str = "") -> Path:
    path = tmp / "grid.yaml"
    path.write_text(f"out: {tmp / 'out'}\nseed: 3\n{grid}\ndomains:\n{domains}")
    return path


def _toy(name: str, cfg: Path, extra: str = "") -> str:
    return (f"  {name}:\n    config: {cfg}\n    num_samples: 200\n    metric: w2\n"
            f"    goal: min\n{extra}")


GRID = """grid:
  schedule: [cosine]
  target: [v]
  weighting: [uniform]
  sampler: [ddim, dpmpp_2m, unipc@fitted]
  nfe: [3, 6]
"""


@pytest.mark.parametrize("bad, needle", [
    ("sampler: [dpmpp_4m]", "unknown sampler 'dpmpp_4m'; valid names: auto, ddim, ddpm"),
    ("sampler: [ddpm@fitted]", "only a deterministic sampler's steps can be fitted"),
    ("sampler: [adaptive]", "unknown sampler 'adaptive'"),
    ("schedule: [cosin]", "unknown schedule 'cosin'; valid names: cosine, edm"),
    ("weighting: [snr]", "unknown weighting 'snr'; valid names: edm, min_snr"),
    ("nfe: [0]", "NFE must be positive"),
    ("steps: [5]", "grid.steps is not an axis"),
])
def test_unknown_names_are_rejected_before_anything_runs(tmp_path, capsys, bad, needle):
    cfg = write_config(tmp_path / "cfg.yaml", tmp_path / "run")
    grid = _grid(tmp_path, _toy("toy", cfg), f"grid:\n  nfe: [3]\n  {bad}\n")
    assert main(["compare", "-c", str(grid)]) != 0
    err = capsys.readouterr().err
    assert needle in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(GridError):
        load_grid(grid)


def test_compare_scores_every_cell_records_failures_and_resumes(tmp_path, capsys):
    good = write_config(tmp_path / "good.yaml", tmp_path / "unused", max_steps=30)
    nan = write_config(tmp_path / "nan.yaml", tmp_path / "unused2", max_steps=30, extra="""
  on_nonfinite: stop
""")
    # the second domain entry trains a backbone that turns NaN at its 3rd forward pass
    text = nan.read_text().replace("class_path: domains.toy.MLPBackbone",
                                   "class_path: tests.helpers.NaNBackbone")
    nan.write_text(text.replace("      depth: 2", "      depth: 2\n      nan_from: 3"))
    grid = _grid(tmp_path, _toy("toy", good) + _toy("broken", nan), GRID)

    # two workers at once (each with one OpenMP thread on 2 cores)
    assert main(["compare", "-c", str(grid), "--jobs", "2"]) == 1  # one model failed
    out = tmp_path / "out"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 2  # domains x samplers x NFE
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["domain"] for r in ok} == {"toy"} and len(ok) == 6
    assert {r["domain"] for r in failed} == {"broken"}
    assert all(r["reason"].startswith("training: ") and "nan" in r["reason"].lower()
               for r in failed)
    for name in ("results.json", "results.md", "quality_vs_nfe_toy.png",
                 "loss_vs_logsnr_cosine.png"):
        assert (out / name).stat().st_size > 100
    table = (out / "results.md").read_text()
    assert "| cosine | v | uniform | ddim |" in table and "training:" in table
    # every cell called the network as often as its column says, so no note on calls
    assert {int(r["calls"]) for r in ok} == {3, 6} and "Network evaluations" not in table

    # each reported value is what the checkpoint gives when sampled and scored again
    result = json.loads((out / "results.json").read_text())
    row = next(r for r in result["rows"]
               if r["domain"] == "toy" and r["sampler"] == "dpmpp_2m" and r["nfe"] == 6)
    ckpt = next((out / "cells").glob("toy-cosine-v-uniform-*")) / "run/checkpoints/last.ckpt"
    module = load_module(ckpt)
    module.domain.setup("test")
    samples, _ = module.generate(200, sampler="dpmpp_2m", steps=6, seed=3)
    assert module.domain.metrics(samples)["w2"] == pytest.approx(row["value"], rel=1e-6)
    # the @fitted cells sample on the schedule tune-steps fitted and stored beside the model
    from diffplat.training.checkpoint import load_step_schedules

    fitted = load_step_schedules(ckpt)["schedules"]
    assert set(fitted) == {"unipc/3", "unipc/6"}
    row = next(r for r in result["rows"]
               if r["domain"] == "toy" and r["sampler"] == "unipc@fitted" and r["nfe"] == 6)
    samples, _ = module.generate(200, sampler="unipc", steps=6, seed=3,
                                 sampler_options={"levels": fitted["unipc/6"]["levels"]})
    assert module.domain.metrics(samples)["w2"] == pytest.approx(row["value"], rel=1e-6)

    # the loss curve is the EMA model's error: near 1 at low SNR, far below at high SNR
    curve = result["loss_curves"][0]
    assert curve["relative_mse"][0] > 0.5 and curve["relative_mse"][-1] < 0.2
    assert torch.tensor(curve["log_snr"]).diff().gt(0).all()

    # a rerun trains nothing and rewrites the same table
    mtime = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["compare", "-c", str(grid)]) == 1
    printed = capsys.readouterr().out
    assert "2 models already done, 0 to run" in printed
    assert ckpt.stat().st_mtime_ns == mtime
    assert (out / "results.md").read_text() == table


def test_the_quick_preset_has_the_few_step_samplers():
    grid = load_grid(ROOT / "configs/compare/quick.yaml", root=ROOT)
    samplers_used = {c.sampler for c in grid.sample_cells}
    assert {"unipc", "dpmpp_3m", "deis", "auto", "unipc@fitted"} <= samplers_used
    assert {c.nfe for c in grid.sample_cells} == {5, 10, 20, 50}
    assert grid.only(["toy"]).domains.keys() == {"toy"}
    with pytest.raises(GridError, match="unknown domain 'toyy'"):
        grid.only(["toyy"])


def test_the_gpu_preset_loads_with_the_few_step_samplers():
    grid = load_grid(ROOT / "configs/compare/gpu.yaml", root=ROOT)
    samplers_used = {c.sampler for c in grid.sample_cells}
    assert {"unipc", "dpmpp_3m", "deis", "ipndm", "auto", "unipc@fitted"} <= samplers_used
    assert {c.nfe for c in grid.sample_cells} == {5, 10, 20, 50, 100}


def test_the_shapes_recipe_preset_builds_its_four_variants(tmp_path):
    """Each variant differs from procedural-tiny in the one thing its name says, and every
    one is scored against all 360 test clouds."""
    from diffplat.training.checkpoint import build_module
    from diffplat.training.lightning import derive_backbone_args
    from domains.shapes.procedural import prepare_procedural

    grid = load_grid(ROOT / "configs/compare/shapes-recipe.yaml", root=ROOT)
    cells = {c.domain: c for c in grid.train_cells}
    want = {"shapes-base": ("cosine", "v", 64, 3), "shapes-wide": ("cosine", "v", 128, 3),
            "shapes-deep": ("cosine", "v", 64, 6), "shapes-flow": ("flow", "flow", 64, 3)}
    assert {n: (c.schedule, c.target, c.config["model"]["backbone"]["init_args"]["hidden"],
                c.config["model"]["backbone"]["init_args"]["depth"])
            for n, c in cells.items()} == want
    assert {s.num_samples for s in grid.domains.values()} == {360}
    assert {(c.sampler, c.nfe) for c in grid.sample_cells} == {("dpmpp_2m", 30)}
    prepare_procedural(tmp_path / "shapes", per_class=10, seed=0)
    sizes = {}
    for name in ("shapes-base", "shapes-wide"):
        model = cells[name].config["model"]
        assert model["domain"]["init_args"]["max_eval"] == 360
        model["domain"]["init_args"]["data_path"] = str(tmp_path / "shapes")
        model["backbone"]["init_args"].update(derive_backbone_args(model))
        sizes[name] = sum(p.numel() for p in build_module(model).backbone.parameters())
    assert sizes["shapes-base"] == 196_995  # procedural-small (first shipped)
    assert sizes["shapes-wide"] > 3 * sizes["shapes-base"]


def test_the_audio_recipe_preset_builds_its_four_variants():
    """digits-tiny against one change each, all drawn with guidance 3 and scored on the
    classifier's recognition of the asked digit."""
    grid = load_grid(ROOT / "configs/compare/audio-recipe.yaml", root=ROOT)
    cells = {c.domain: c for c in grid.train_cells}
    got = {n: (c.schedule, c.target, c.config["model"]["backbone"]["init_args"]["channels"],
               c.config["model"]["backbone"]["init_args"]["blocks"])
           for n, c in cells.items()}
    assert got == {"audio-base": ("cosine", "v", [8, 16, 32, 64], 1),
                   "audio-wide": ("cosine", "v", [16, 32, 64, 128], 1),
                   "audio-blocks2": ("cosine", "v", [8, 16, 32, 64], 2),
                   "audio-flow": ("flow", "flow", [8, 16, 32, 64], 1)}
    assert {s.metric for s in grid.domains.values()} == {"accuracy"}
    assert {s.sampling["guidance"] for s in grid.domains.values()} == {3.0}
    assert all(c.config["trainer"]["max_steps"] == 800 for c in cells.values())


def test_the_report_states_the_counted_calls_where_guidance_doubles_them():
    """A guided cell's column says NFE 50 (the grid's budget) while each sample took 100
    network calls: the table says so under the domain's rows."""
    from diffplat.compare.report import markdown

    grid = load_grid(ROOT / "configs/compare/audio-recipe.yaml", root=ROOT)
    base = {"schedule": "cosine", "target": "v", "weighting": "uniform",
            "sampler": "dpmpp_2m", "nfe": 50, "steps": 50, "status": "ok", "value": 0.6}
    rows = [{**base, "domain": "audio-base", "calls": 100},
            {**base, "domain": "audio-wide", "calls": 50}]
    table = markdown(grid, rows)
    base_part, _, wide_part = table.partition("## audio-wide")
    assert ("dpmpp_2m NFE 50: 100 (guidance calls the network twice per evaluation)"
            in base_part)
    assert "Network evaluations" not in wide_part


def test_a_seed_replicate_trains_and_samples_with_its_seed_in_its_own_folder(tmp_path):
    """--seed N replaces the file's seed for every model's training and sampling, and
    keeps the replicate's results apart from the file's own (``<out>-seed<N>``)."""
    cfg = write_config(tmp_path / "cfg.yaml", tmp_path / "run")
    path = _grid(tmp_path, _toy("toy", cfg), "grid:\n  nfe: [3]\n  sampler: [ddim]\n")
    own = load_grid(path)
    rep = load_grid(path, seed=1)
    assert (own.seed, own.out) == (3, tmp_path / "out")
    assert (rep.seed, rep.out) == (1, tmp_path / "out-seed1")
    assert [c.config["seed_everything"] for c in own.train_cells] == [3]
    assert [c.config["seed_everything"] for c in rep.train_cells] == [1]
    assert load_grid(path, seed=1, out=str(tmp_path / "x")).out == tmp_path / "x"


def test_the_conformer_recipe_preset_keeps_the_old_base_beside_the_new_default():
    """conf-base is conformers-qm9-tiny as it was before the ablation (eps, lr 2e-3), each
    variant changes what its name says, and conf-v-lr4 is the recipe the ablation gave the
    tiny config (until VEDA's recipe replaced it on 2026-12-08, issue #24: every entry pins
    the VP recipe it measured)."""
    import yaml

    grid = load_grid(ROOT / "configs/compare/conformers-recipe.yaml", root=ROOT)
    cells = {c.domain: c for c in grid.train_cells}
    got = {n: (c.schedule, c.target, c.config["model"]["lr"],
               c.config["model"].get("t_sampler", "uniform")) for n, c in cells.items()}
    assert got == {"conf-base": ("polynomial", "eps", 0.002, "uniform"),
                   "conf-v": ("polynomial", "v", 0.002, "uniform"),
                   "conf-flow": ("flow", "flow", 0.002, "uniform"),
                   "conf-lr4": ("polynomial", "eps", 0.004, "uniform"),
                   "conf-lownoise": ("polynomial", "eps", 0.002, "logit_normal"),
                   "conf-v-lr4": ("polynomial", "v", 0.004, "uniform")}
    assert {(s.metric, s.goal, s.num_samples) for s in grid.domains.values()} == {
        ("mat_r_mean", "min", 400)}
    assert {tuple(sorted(s.sampling.items())) for s in grid.domains.values()} == {
        (("batch_size", 400), ("copies", 2), ("split", "val"))}
    for name, cell in cells.items():
        model = cell.config["model"]
        assert (model["schedule_options"], model["sigma_data"], model["weighting"],
                model["sampler"]) == (None, 1.0, "uniform", "dpmpp_2m"), name
        assert model["t_options"] is None or name == "conf-lownoise", name
    tiny = yaml.safe_load((ROOT / "configs/molecules/conformers-qm9-tiny.yaml").read_text())
    assert tiny["model"]["lr"] == cells["conf-v-lr4"].config["model"]["lr"] == 0.004
    assert (tiny["model"]["schedule"], tiny["model"]["target"]) == ("edm", "edm")
