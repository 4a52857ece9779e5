"""The installed environment: every domain's libraries load, at the versions of the lock.

These tests fail on a fresh machine whose install resolved a broken pair (for example
torchaudio 2.11.1 beside torch 2.11.0, whose libtorchaudio.so does not load), naming it.
"""

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from diffplat.cli.failures import (
    CONSTRAINTS,
    import_failure,
    installed_version,
    normalise,
    pinned_versions,
)

ROOT = Path(__file__).resolve().parents[1]

# (module, distribution, domain) of every library a domain loads
DOMAIN_LIBRARIES = [
    ("torchaudio", "torchaudio", "audio"),
    ("soundfile", "soundfile", "audio"),
    ("espeakng_loader", "espeakng-loader", "audio"),
    ("rdkit.Chem", "rdkit", "molecules"),
    ("trimesh", "trimesh", "shapes"),
]


@pytest.mark.parametrize("module,dist,domain", DOMAIN_LIBRARIES, ids=lambda v: str(v))
def test_domain_library_loads(module, dist, domain):
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any failure to load is the finding
        pytest.fail(f"{dist} {installed_version(dist)} (for the {domain} domain) does not "
                    f"load beside torch {torch.__version__}: {type(err).__name__}: {err}. "
                    f'Reinstall the locked set: pip install -c constraints.txt -e ".[dev]"')


def test_qm9_data_wheel_is_complete():
    from domains.molecules.qm9 import _csv_paths, qm9_data_dir

    assert all(p.is_file() for p in _csv_paths(qm9_data_dir()))


def test_torchaudio_kernels_run_beside_this_torch():
    import torchaudio.functional as AF

    x = torch.sin(torch.linspace(0, 100, 1600))[None]
    y = AF.resample(x, 16000, 8000)
    assert y.shape == (1, 800) and torch.isfinite(y).all()


def test_espeak_library_and_voices_are_present():
    import espeakng_loader

    assert Path(espeakng_loader.get_library_path()).is_file()
    assert Path(espeakng_loader.get_data_path()).is_dir()


def test_installed_versions_match_the_lock():
    pins = pinned_versions()
    assert pins, f"{CONSTRAINTS} is missing or has no pins"
    for key in ("torch", "torchaudio", "pytorch-lightning", "rdkit", "trimesh"):
        assert key in pins, f"{key} is not pinned in {CONSTRAINTS.name}"
    drift = {name: (installed_version(name), want) for name, want in pins.items()
             if installed_version(name) not in (None, want)}
    assert not drift, (
        "installed versions differ from constraints.txt (name: installed, locked): "
        + ", ".join(f"{n}: {a}, {b}" for n, (a, b) in sorted(drift.items()))
        + '; reinstall with pip install -c constraints.txt -e ".[dev]"')


def test_pyproject_pins_the_torch_pair_that_the_lock_holds():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["audio"]
    pins = pinned_versions()
    for name in ("torch", "torchaudio"):
        spec = next(d for d in deps if normalise(d.split("=")[0].split(">")[0]) == name)
        assert spec.replace(" ", "").startswith(f"{name}=={pins[name]}"), (
            f"pyproject.toml must pin {name} exactly to the locked {pins[name]}, got {spec!r}")


def _broken_torchaudio(tmp_path: Path) -> Path:
    """A torchaudio that fails the way a wheel built for another torch does."""
    pkg = tmp_path / "fake" / "torchaudio"
    pkg.mkdir(parents=True)
    lib = pkg / "lib" / "libtorchaudio.so"
    (pkg / "__init__.py").write_text(
        f"raise OSError('Could not load this library: {lib}')\n")
    return tmp_path / "fake"


def test_cli_names_a_broken_domain_library_in_one_line(tmp_path):
    env = {"PYTHONPATH": f"{_broken_torchaudio(tmp_path)}:{ROOT}", "PATH": "/usr/bin:/bin",
           "WANDB_MODE": "offline"}
    out = subprocess.run([sys.executable, "-m", "diffplat.cli", "data", "prepare", "digits",
                          "--out", str(tmp_path / "digits")], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert "Traceback" not in line
    for word in ("audio domain", "torchaudio", f"torch {installed_version('torch')}",
                 "constraints.txt", '".[audio]"'):
        assert word in line, (word, line)
    assert not (tmp_path / "digits").exists()


def test_missing_library_is_named_with_its_domain():
    source = textwrap.dedent("""
        def load():
            raise ModuleNotFoundError("No module named 'trimesh'", name="trimesh")
        load()
    """)
    try:
        exec(compile(source, str(ROOT / "domains" / "shapes" / "meshes.py"), "exec"), {})
    except ModuleNotFoundError as err:
        message = import_failure(err)
    assert message is not None
    assert message.startswith("the shapes domain needs trimesh")
    assert '".[shapes]"' in message


def test_other_os_errors_are_not_taken_for_import_failures():
    assert import_failure(OSError(28, "No space left on device")) is None
    assert import_failure(PermissionError(13, "Permission denied", "/x/y")) is None
