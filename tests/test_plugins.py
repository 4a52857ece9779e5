"""A domain from outside this repository plugs in through the ``diffplat.domains`` entry
point: a throwaway package is built as a wheel, installed into a folder, and driven end to
end (help, data prepare, fit, sample, evaluate, its own command, compare, the Python API)
with no change to diffplat/."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "ringdomain"
version = "0.0.1"

[project.entry-points."diffplat.domains"]
rings = "ringdomain:PLUGIN"

[tool.setuptools]
packages = ["ringdomain"]
"""

INIT = '''
"""Points on a noisy ring: a domain written outside diffplat."""
from diffplat.plugins import DomainPlugin

PLUGIN = DomainPlugin(
    name="rings",
    domain="ringdomain.domain:RingDomain",
    summary="points on a noisy ring (a throwaway test domain)",
    mask_help="rings: the known coordinate, 0 or 1",
    prepare_help="rings: a .npz of ring points",
    commands={"rings-info": "ringdomain.domain:info_main"},
    command_help={"rings-info": "PATH  print the radius of a ring file"},
)
'''

def _domain_source() -> str:
    """ringdomain/domain.py as docs/domains.md shows it (so the page stays true)."""
    text = (ROOT / "docs" / "domains.md").read_text()
    start = text.index("```python\n# ringdomain/domain.py\n") + len("```python\n")
    return text[start:text.index("```", start)]


DOMAIN = _domain_source()

CONFIG = """
seed_everything: 0
trainer:
  max_steps: 400
  max_epochs: -1
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  check_val_every_n_epoch: 1000
  logger: false
  default_root_dir: {root}
model:
  domain:
    class_path: ringdomain.domain.RingDomain
    init_args: {{data_path: {data}}}
  backbone:
    class_path: ringdomain.domain.RingMLP
    init_args: {{hidden: 64}}
  schedule: cosine
  target: v
  lr: 0.003
  warmup_steps: 10
  batch_size: 128
  sampler: dpmpp_2m
  sample_steps: 10
  sample_num: 0
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    (src / "ringdomain").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "ringdomain" / "__init__.py").write_text(textwrap.dedent(INIT))
    (src / "ringdomain" / "domain.py").write_text(textwrap.dedent(DOMAIN))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", str(src), "-w", str(tmp / "dist")], check=True,
                   capture_output=True, timeout=300)
    wheel = next((tmp / "dist").glob("ringdomain-*.whl"))
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1"}
    work = tmp / "work"
    work.mkdir()
    return work, env


def _run(installed, *args, check=True):
    work, env = installed
    out = subprocess.run([sys.executable, "-m", "diffplat.cli", *args], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_the_outside_domain_is_listed_and_prepares_its_data(installed):
    assert "rings: points on a noisy ring" in _run(installed, "--help").stdout
    assert "rings-info" in _run(installed, "--help").stdout
    _run(installed, "data", "prepare", "rings", "--out", "data/rings", "-o", "radius=1.5")
    info = json.loads(_run(installed, "data", "info", "rings", "data/rings").stdout)
    assert info == {"train": 2000, "radius": 1.5}
    assert json.loads(_run(installed, "rings-info", "data/rings").stdout)["radius"] == 1.5
    bad = _run(installed, "data", "prepare", "rings", "-o", "colour=3", check=False)
    assert bad.returncode == 1 and "valid: num, radius" in bad.stderr


def test_the_outside_domain_trains_samples_and_scores(installed):
    work, _ = installed
    if not (work / "data" / "rings" / "rings.npz").is_file():
        _run(installed, "data", "prepare", "rings", "--out", "data/rings")
    (work / "cfg.yaml").write_text(CONFIG.format(root="run", data="data/rings/rings.npz"))
    _run(installed, "fit", "-c", "cfg.yaml")  # its classes are trusted: it is installed
    _run(installed, "sample", "--ckpt", "run/checkpoints/last.ckpt", "--num", "500",
         "--seed", "0", "--out", "samples", "--no-progress")
    # its declared sampling option reaches its prior; a bad value is refused naming it
    _run(installed, "sample", "--ckpt", "run/checkpoints/last.ckpt", "--num", "8",
         "--prior", "spread=0.5", "--out", "spread", "--no-progress")
    bad = _run(installed, "sample", "--ckpt", "run/checkpoints/last.ckpt", "--num", "8",
               "--prior", "spread=-1", "--out", "bad", "--no-progress", check=False)
    assert bad.returncode == 1 and "--prior spread must be > 0, got -1" in bad.stderr
    _run(installed, "evaluate", "--samples", "samples", "--json", "m.json")
    metrics = json.loads((work / "m.json").read_text())["metrics"]
    assert metrics["num"] == 500
    _run(installed, "export", "--ckpt", "run/checkpoints/last.ckpt", "--out", "model")
    # the Python API, from the export, without the data; the same samples as the CLI's,
    # and nearer the ring than the untrained network's
    (work / "data" / "rings" / "rings.npz").rename(work / "rings-away.npz")
    try:
        code = textwrap.dedent("""
            import numpy as np, diffplat
            from diffplat.training.checkpoint import build_module
            p = diffplat.load("model")
            x = p.sample(500, seed=0)
            assert p.sample(4, seed=0, spread=0.5).shape == (4, 2)
            print(tuple(x.shape), p.domain.radius)
            print(float(np.abs(x.numpy() - np.load("samples/points.npy")).max()))
            fresh = diffplat.Pipeline(build_module(dict(p.module.hparams)), "untrained")
            fresh.domain.load_sampling_state({"radius": 1.5})
            print(p.metrics(x)["radius_error"], fresh.metrics(fresh.sample(500))["radius_error"])
            """)
        out = subprocess.run([sys.executable, "-c", code], cwd=work, env=installed[1],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        shape, diff, errors = out.stdout.strip().splitlines()[-3:]
        assert shape == "(500, 2) 1.5"
        assert float(diff) < 1e-5   # the CLI and the Python API draw the same samples
        trained, untrained = map(float, errors.split())
        assert abs(trained - metrics["radius_error"]) < 1e-5
        assert trained < 0.75 * untrained
    finally:
        (work / "rings-away.npz").rename(work / "data" / "rings" / "rings.npz")


def test_compare_runs_a_grid_over_the_outside_domain(installed):
    work, _ = installed
    if not (work / "cfg.yaml").is_file():
        pytest.skip("needs the training test's config")
    (work / "grid.yaml").write_text(textwrap.dedent("""
        out: cmp
        seed: 0
        grid:
          schedule: [cosine]
          target: [v]
          weighting: [uniform]
          sampler: [ddim]
          nfe: [4]
        domains:
          rings:
            config: cfg.yaml
            overrides: {trainer.max_steps: 20}
            num_samples: 100
            metric: radius_error
            goal: min
        """))
    _run(installed, "compare", "-c", "grid.yaml")
    rows = json.loads((work / "cmp" / "results.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert len(rows) == 1 and rows[0]["status"] == "ok"
