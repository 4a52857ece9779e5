"""configs/compare/qm9-ve.yaml, VEDA's recipe on qm9-tiny (issue #24): each variant's
settings pinned, every sampler option valid, and the per-entry sampler options reaching
the sampler through the compare worker."""

import math
from pathlib import Path

import torch
import yaml

from diffplat import losses, schedules
from diffplat.sampling import check_sampler_options

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs/compare/qm9-ve.yaml"
# qm9-tiny's recipe after round three and before round four (docs/molecules.md)
ROUND_THREE = {"schedule": "polynomial", "schedule_options": None, "target": "v",
               "sigma_data": 1.0, "weighting": "uniform", "t_sampler": "uniform",
               "t_options": None, "sampler": "dpmpp_2m_sde"}
VE_MODEL = {"schedule": "edm", "schedule_options": {"sigma_min": 0.001, "sigma_max": 80.0},
            "target": "edm", "sigma_data": 1.4, "weighting": "edm", "t_sampler": "lognormal",
            "t_options": {"p_mean": -0.9264, "p_std": 1.4112}}


def test_the_ve_preset_pins_each_variant():
    from diffplat.compare.grid import load_grid

    grid = load_grid(PRESET, root=ROOT)
    tiny = yaml.safe_load((ROOT / "configs/molecules/qm9-tiny.yaml").read_text())["model"]
    cells = {c.domain: c for c in grid.train_cells}
    assert set(cells) == {"qm9-base", "qm9-ve", "qm9-ve-arcsin", "qm9-ve-selfcond"}
    sc = cells["qm9-ve-selfcond"].config["model"]
    assert sc["self_condition"] and sc["backbone"]["init_args"]["self_condition"]
    assert {k: sc[k] for k in VE_MODEL} == VE_MODEL
    # the base is qm9-tiny's recipe before round four (VP, v target) at make demo's budget,
    # scoring 200 molecules; qm9-tiny itself is VEDA's recipe now
    base = cells["qm9-base"].config
    assert {k: base["model"][k] for k in ROUND_THREE} == ROUND_THREE
    for key in ("lr", "batch_size", "sample_steps", "backbone"):
        assert base["model"][key] == tiny[key], key
    assert base["trainer"]["max_steps"] == 6000 and base["model"]["sample_num"] == 0
    assert {k: tiny[k] for k in VE_MODEL} == VE_MODEL and tiny["sampler"] == "euler_anneal"
    for name in ("qm9-ve", "qm9-ve-arcsin"):
        model = cells[name].config["model"]
        assert {k: model[k] for k in VE_MODEL} == VE_MODEL, name
        assert cells[name].config["trainer"]["max_steps"] == 6000
        assert model["backbone"] == tiny["backbone"] and model["lr"] == tiny["lr"]
    # the two VE entries train the same model (same config but for the entry's name)
    assert cells["qm9-ve"].config == cells["qm9-ve-arcsin"].config
    samples = {(c.train.domain, c.sampler): c for c in grid.sample_cells}
    assert set(samples) == {("qm9-base", "dpmpp_2m_sde"), ("qm9-ve-selfcond", "euler_anneal")} | {
        (d, s) for d in ("qm9-ve", "qm9-ve-arcsin") for s in ("dpmpp_2m_sde", "euler",
                                                                 "euler_anneal")}
    assert all(c.nfe == 100 and c.steps == 100 for c in samples.values())
    for name, spec in grid.domains.items():
        assert spec.num_samples == 200 and spec.metric == "mol_stability"
        opts = spec.sampling.get("sampler_options", {})
        for sampler in {s for d, s in samples if d == name}:
            check_sampler_options(sampler, opts)
    assert grid.domains["qm9-ve"].sampling == {"batch_size": 200}
    assert grid.domains["qm9-ve-arcsin"].sampling["sampler_options"] == {
        "spacing": "arcsin", "rho": 2.0, "level_min": 0.001}


def test_the_ve_training_levels_are_vedas_in_units_of_sigma_data():
    """ln(sigma / sigma_data) ~ N(ln sqrt(0.001 * 80), ((ln 80 - ln 0.001) / 8)^2): VEDA's
    rule with its coordinates in units of their std (sigma_data 1 there)."""
    sd = VE_MODEL["sigma_data"]
    p = VE_MODEL["t_options"]
    assert abs(p["p_mean"] - (math.log(sd) + math.log(math.sqrt(0.001 * 80)))) < 1e-4
    assert abs(p["p_std"] - (math.log(80) - math.log(0.001)) / 8) < 1e-4
    sched = schedules.get("edm", **VE_MODEL["schedule_options"])
    t = losses.sample_t("lognormal", 20000, sched, torch.Generator().manual_seed(0), **p)
    z = torch.log(sched.noise_level(t.double()) / sd)
    assert abs(float(z.mean()) + 1.2629) < 0.03 and abs(float(z.std()) - 1.4112) < 0.03


class _Module:
    """What compare's worker needs of a module: generate() and the domain's metrics."""

    def __init__(self):
        self.calls = []
        self.domain = self

    def generate(self, num, **kw):
        self.calls.append(kw)
        return None, {"nfe": 100}

    def metrics(self, samples, split):
        return {"mol_stability": 0.5}


def test_the_worker_passes_an_entrys_sampler_options_to_every_cell():
    from diffplat.compare.worker import score

    module = _Module()
    spec = {"sampling": {"batch_size": 200, "sampler_options": {"spacing": "arcsin"}},
            "num_samples": 200, "seed": 0, "metric": "mol_stability"}
    out = score(module, {"sampler": "euler_anneal", "nfe": 100, "steps": 100}, spec)
    assert out["status"] == "ok"
    call = module.calls[0]
    assert call["sampler"] == "euler_anneal" and call["batch_size"] == 200
    assert call["sampler_options"] == {"spacing": "arcsin"}
    assert "spacing" not in call and "batch_size" not in call.get("prior", {})
    # without options, none are passed (as before)
    score(module, {"sampler": "euler", "nfe": 100, "steps": 100},
          {**spec, "sampling": {"batch_size": 200}})
    assert module.calls[1]["sampler_options"] is None


def test_older_presets_on_qm9_tiny_keep_the_recipe_their_tables_measured():
    """qm9-recipe.yaml (rounds one to three) and quick.yaml's molecule entry were measured
    on qm9-tiny's VP recipe: they pin it, so qm9-tiny turning VE does not change their rows."""
    from diffplat.compare.grid import load_grid

    grid = load_grid(ROOT / "configs/compare/qm9-recipe.yaml", root=ROOT)
    for cell in grid.train_cells:
        model = cell.config["model"]
        if model["schedule"] == "flow":
            assert model["target"] == "flow", cell.domain
        else:
            assert model["schedule"] == "polynomial", cell.domain
        assert model["schedule_options"] is None and model["sigma_data"] == 1.0, cell.domain
        assert model["weighting"] == "uniform", cell.domain
        if cell.domain not in ("qm9-v-lownoise", "qm9-v-lowdisc"):
            assert model["t_sampler"] == "uniform" and model["t_options"] is None, cell.domain
    quick = load_grid(ROOT / "configs/compare/quick.yaml", root=ROOT)
    mols = [c for c in quick.train_cells if c.domain == "molecules"]
    assert {c.config["model"]["schedule"] for c in mols} == {"polynomial", "edm"}
    for cell in mols:
        model = cell.config["model"]
        assert model["schedule_options"] is None and model["sigma_data"] == 1.0
        assert (model["target"], model["weighting"], model["t_sampler"]) == ("eps", "uniform",
                                                                            "uniform")


def test_make_demo_samples_qm9_tiny_with_vedas_full_sampler():
    """make demo's sampler is qm9-tiny's (euler_anneal) on the arcsin grid of the preset's
    winning cell, and the shipped (VP) model keeps its card's sampler."""
    import json
    import re

    make = (ROOT / "Makefile").read_text()
    var = dict(re.findall(r"^(\w+) \?= (.*)$", make, flags=re.M))
    tiny = yaml.safe_load((ROOT / "configs/molecules/qm9-tiny.yaml").read_text())["model"]
    assert var["DEMO_SAMPLER"] == tiny["sampler"] == "euler_anneal"
    from diffplat.compare.grid import load_grid

    opts = load_grid(PRESET, root=ROOT).domains["qm9-ve-arcsin"].sampling["sampler_options"]
    args = var["DEMO_SAMPLER_ARGS"].split()
    assert args[:2] == ["--spacing", opts["spacing"]]
    assert args[2:] == ["-o", f"level_min={opts['level_min']}"]
    card = json.loads((ROOT / "models/qm9-small/card.json").read_text())
    how = card["measured_with"]
    assert var["SHIPPED_SAMPLER"] == how["sampler"]
    # the card's grid too, so the shipped line reproduces the card
    from diffplat.cli.options import parse_options

    shipped = var["SHIPPED_SAMPLER_ARGS"].split()
    assert shipped[:2] == ["--spacing", how["spacing"]]
    assert parse_options(shipped[3::2]) == how["sampler_options"]
    assert shipped[2::2] == ["-o"] * len(shipped[3::2])
    assert "$(SHIPPED_SAMPLER) $(SHIPPED_SAMPLER_ARGS)" in make
    demo = [line for line in make.splitlines() if "diffplat sample" in line
            and "DEMO_DIR" in line][0]
    assert "$(DEMO_SAMPLER) $(DEMO_SAMPLER_ARGS)" in demo
