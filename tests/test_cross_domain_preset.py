"""configs/compare/cross-domain-ve.yaml, VEDA's recipe in the audio, shapes and conformer
domains (issue #24): each base entry is its domain's tiny recipe before the study (for
conformers pinned: conformers-qm9-tiny took the conf-ve-arcsin recipe on 2026-12-08), each
VE entry builds into a model with VEDA's settings in units of the domain's sigma_data, and
sigma_data is the measured std of what the model diffuses (benchmarks/data_sigma.py), within
5%."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffplat import losses, schedules
from diffplat.sampling import check_sampler_options

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs/compare/cross-domain-ve.yaml"
TINY = {"audio": "configs/audio/digits-tiny.yaml",
        "shapes": "configs/shapes/procedural-tiny.yaml",
        "conf": "configs/molecules/conformers-qm9-tiny.yaml"}
NFE = {"audio": 50, "shapes": 30, "conf": 50}
#: conformers-qm9-tiny's recipe before 2026-12-08 (the conformer ablation's winner), which
#: conf-base pins; the tiny config itself is conf-ve-arcsin's recipe since then
CONF_BEFORE = {"schedule": "polynomial", "schedule_options": None, "target": "v",
               "sigma_data": 1.0, "weighting": "uniform", "t_sampler": "uniform",
               "t_options": None, "sampler": "dpmpp_2m"}
#: the model settings the tiny configs share with their entries
RECIPE_KEYS = ("schedule", "schedule_options", "target", "sigma_data", "weighting",
               "t_sampler", "t_options")
#: VEDA's levels: ln(sigma / d) ~ N(ln sqrt(0.001 * 80), ((ln 80 - ln 0.001) / 8)^2)
VEDA_MEAN, VEDA_STD = math.log(math.sqrt(0.001 * 80)), (math.log(80) - math.log(0.001)) / 8


@pytest.fixture(scope="module")
def grid():
    from diffplat.compare.grid import load_grid

    return load_grid(PRESET, root=ROOT)


def _cells(grid):
    return {c.domain: c for c in grid.train_cells}


def test_each_domain_has_its_base_and_two_ve_entries(grid):
    cells = _cells(grid)
    assert set(cells) == {f"{d}-{v}" for d in TINY for v in ("base", "ve", "ve-arcsin")}
    samples = {c.train.domain: c for c in grid.sample_cells}
    assert len(samples) == len(grid.sample_cells) == 9  # one sampling cell per entry
    for d, path in TINY.items():
        tiny = yaml.safe_load((ROOT / path).read_text())
        base, ve, full = (cells[f"{d}-{v}"].config for v in ("base", "ve", "ve-arcsin"))
        # the base is the tiny recipe before the study, at its own budget: for audio and
        # shapes the tiny config as it is; for conformers the recipe before 2026-12-08
        for key in ("lr", "batch_size", "backbone"):
            assert base["model"][key] == tiny["model"][key], (d, key)
        if d == "conf":
            assert {k: base["model"].get(k) for k in CONF_BEFORE} == CONF_BEFORE
            own = CONF_BEFORE["sampler"]
        else:
            for key in ("schedule", "target"):
                assert base["model"][key] == tiny["model"][key], (d, key)
            own = tiny["model"]["sampler"]
        for cfg in (base, ve, full):
            assert cfg["trainer"]["max_steps"] == tiny["trainer"]["max_steps"], d
            assert cfg["model"]["backbone"] == tiny["model"]["backbone"], d
            assert cfg["model"]["lr"] == tiny["model"]["lr"], d
        # the full recipe samples the ve entry's model (same config, entry name aside)
        assert ve == full, d
        # the base's sampler and NFE; VEDA's sampler at the same NFE
        assert (samples[f"{d}-base"].sampler, samples[f"{d}-ve"].sampler,
                samples[f"{d}-ve-arcsin"].sampler) == (own, own, "euler_anneal"), d
        assert {samples[f"{d}-{v}"].nfe for v in ("base", "ve", "ve-arcsin")} == {NFE[d]}
    assert {grid.domains[f"audio-{v}"].sampling["guidance"]
            for v in ("base", "ve", "ve-arcsin")} == {3.0}


def test_conformers_qm9_tiny_is_the_conf_ve_arcsin_recipe(grid):
    """The full recipe won in both seeds (issue #24): conformers-qm9-tiny trains the model
    conf-ve-arcsin trains and names its sampler, and its header gives that entry's grid."""
    path = ROOT / TINY["conf"]
    tiny = yaml.safe_load(path.read_text())["model"]
    cells = _cells(grid)
    full = cells["conf-ve-arcsin"].config
    assert {k: tiny.get(k) for k in RECIPE_KEYS} == {k: full["model"][k] for k in RECIPE_KEYS}
    assert (tiny["schedule"], tiny["target"], tiny["sigma_data"]) == ("edm", "edm", 1.42)
    (sample,) = [c for c in grid.sample_cells if c.train.domain == "conf-ve-arcsin"]
    assert tiny["sampler"] == sample.sampler == "euler_anneal"
    assert tiny["sample_steps"] == sample.steps == NFE["conf"]
    # everything else the training sees is the entry's too (the entry sets sample_num 0 and
    # keeps dpmpp_2m as its model's sampler name, for its ve twin's dpmpp_2m cell)
    mine = yaml.safe_load(path.read_text())
    mine["model"].update(sample_num=0, sampler="dpmpp_2m")
    assert mine == {**full, "seed_everything": mine["seed_everything"]}
    # the grid the entry samples on is the one the config's comments tell the user to pass
    opts = grid.domains["conf-ve-arcsin"].sampling["sampler_options"]
    assert opts == {"spacing": "arcsin", "rho": 2.0, "level_min": 0.001}
    assert "--spacing arcsin -o level_min=0.001" in path.read_text()
    from diffplat.samplers.grids import noise_levels

    sched = schedules.get(tiny["schedule"], **tiny["schedule_options"])
    told = noise_levels(sched, tiny["sample_steps"], "arcsin", level_min=0.001)
    assert torch.equal(told, noise_levels(sched, tiny["sample_steps"], **opts))


@pytest.mark.parametrize("domain", sorted(TINY))
def test_the_ve_entries_carry_vedas_rule_in_units_of_sigma_data(grid, domain):
    cells = _cells(grid)
    model = cells[f"{domain}-ve"].config["model"]
    d = model["sigma_data"]
    assert (model["schedule"], model["target"], model["weighting"], model["t_sampler"]) == \
        ("edm", "edm", "edm", "lognormal")
    p = model["t_options"]
    assert abs(p["p_mean"] - (math.log(d) + VEDA_MEAN)) < 1e-3
    assert abs(p["p_std"] - VEDA_STD) < 1e-3
    lo, hi = model["schedule_options"]["sigma_min"], model["schedule_options"]["sigma_max"]
    opts = grid.domains[f"{domain}-ve-arcsin"].sampling["sampler_options"]
    check_sampler_options("euler_anneal", opts)
    assert opts["spacing"] == "arcsin" and opts["rho"] == 2.0 and opts["level_min"] == lo
    window = (opts.get("s_tmin", 0.03), opts.get("s_tmax", 3.0))
    if domain == "conf":  # QM9 coordinates in Angstrom: the molecule preset's range
        assert (lo, hi) == (0.001, 80.0) and window == (0.03, 3.0)
    else:  # VEDA's range and churn window in units of sigma_data
        for got, want in zip((lo, hi) + window, (0.001, 80.0, 0.03, 3.0)):
            assert got == pytest.approx(want * d, rel=2e-3)
    # the drawn levels follow the rule
    sched = schedules.get("edm", **model["schedule_options"])
    t = losses.sample_t("lognormal", 20000, sched, torch.Generator().manual_seed(0), **p)
    z = torch.log(sched.noise_level(t.double()) / d)
    assert abs(float(z.mean()) - VEDA_MEAN) < 0.05 and abs(float(z.std()) - VEDA_STD) < 0.05


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    """Ten digit folders of one silent clip each: enough to size the audio backbone."""
    import soundfile as sf

    from domains.audio.data import DIGIT_WORDS

    root = tmp_path_factory.mktemp("digits")
    for split in ("train", "val", "test"):
        for word in DIGIT_WORDS:
            (root / split / word).mkdir(parents=True)
            sf.write(root / split / word / "a.wav", np.zeros(800), 8000)
    return root


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    """data/shapes if prepared, else the same procedural set generated (a few seconds)."""
    if (ROOT / "data/shapes/manifest.json").is_file():
        return ROOT / "data/shapes"
    from domains.shapes.procedural import prepare_procedural

    out = tmp_path_factory.mktemp("shapes") / "shapes"
    prepare_procedural(out, seed=0)
    return out


def test_every_ve_entry_builds_a_model(grid, small_digits, shapes_data):
    """The resolved config of each VE entry instantiates (schedule, target, weighting,
    t-sampler and backbone all valid) and its denoiser preconditions with its sigma_data."""
    from diffplat.training.checkpoint import build_module
    from diffplat.training.lightning import derive_backbone_args

    data = {"audio": small_digits, "shapes": shapes_data}
    for name, cell in _cells(grid).items():
        if "-ve" not in name:
            continue
        model = yaml.safe_load(yaml.safe_dump(cell.config["model"]))
        domain = name.split("-")[0]
        if domain in data:
            model["domain"]["init_args"]["data_path"] = str(data[domain])
        model["backbone"].setdefault("init_args", {}).update(derive_backbone_args(model))
        module = build_module(model)
        assert module.schedule.noise_level(torch.tensor([0.0, 1.0])).tolist() == \
            pytest.approx([model["schedule_options"]["sigma_min"],
                           model["schedule_options"]["sigma_max"]], rel=1e-4)
        assert sum(p.numel() for p in module.backbone.parameters()) > 0


def _data_sigma():
    spec = importlib.util.spec_from_file_location("data_sigma",
                                                  ROOT / "benchmarks/data_sigma.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sigma_data(grid, domain):
    return _cells(grid)[f"{domain}-ve"].config["model"]["sigma_data"]


def test_shapes_sigma_data_is_the_std_of_the_normalised_clouds(grid, shapes_data):
    cfg = yaml.safe_load((ROOT / TINY["shapes"]).read_text())
    got = _data_sigma().measure(cfg, max_items=400, data_path=shapes_data)
    assert abs(got["mean"]) < 0.02
    assert got["rms"] == pytest.approx(_sigma_data(grid, "shapes"), rel=0.05)


def test_audio_sigma_data_is_the_std_of_the_gained_clips(grid, tmp_path):
    """On one clip per voice and digit of 38 training voices (380 clips, 3 s to synthesise),
    read as the domain reads them (resampled, 4x gain): 0.300 on 2026-12-08, against the
    0.306 of all 3,200 training clips of `diffplat data prepare digits`."""
    from diffplat.cli import main

    data = tmp_path / "digits"
    assert main(["data", "prepare", "digits", "--out", str(data), "-o", "per_voice=1",
                 "-o", "max_voices=40", "-o", "num_val=1", "-o", "num_test=1"]) == 0
    cfg = yaml.safe_load((ROOT / TINY["audio"]).read_text())
    got = _data_sigma().measure(cfg, max_items=400, data_path=data)
    assert got["rms"] == pytest.approx(_sigma_data(grid, "audio"), rel=0.05)


def test_conformer_sigma_data_is_the_std_of_centred_qm9_positions(grid, qm9_small):
    """Per free coordinate ((n - 1) x 3 of a centred molecule of n atoms) over the training
    molecules of a 3,000-molecule random subset of QM9 (conftest's qm9_small), read directly
    (the domain's graph building takes a minute); data_sigma.py through the domain gave
    1.4176 A on 1982 training molecules of the whole set."""
    from domains.molecules.qm9 import SPLITS

    a = np.load(qm9_small)
    train = np.nonzero(a["split"] == SPLITS.index("train"))[0]
    sq = dof = 0.0
    pos, n_atoms, offsets = a["positions"], a["n_atoms"], a["offsets"]
    for i in train:
        x = pos[offsets[i]:offsets[i] + n_atoms[i]].astype(np.float64)
        x -= x.mean(0)
        sq += float((x ** 2).sum())
        dof += 3 * (int(n_atoms[i]) - 1)
    assert math.sqrt(sq / dof) == pytest.approx(_sigma_data(grid, "conf"), rel=0.05)
