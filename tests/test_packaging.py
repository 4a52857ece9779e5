"""What a wheel of diffplat carries: every package, the configs, the licence."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_tree_is_listed():
    tree = {".".join(p.parent.relative_to(ROOT).parts)
            for top in ("diffplat", "domains") for p in (ROOT / top).rglob("*.py")
            if "__pycache__" not in p.parts}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert tree | {"diffplat.configs", "diffplat.shipped"} == listed


def test_license_file_matches_the_license_field():
    text = (ROOT / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"]["text"] == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_dependencies_are_imported_somewhere():
    """Every runtime dependency is used by the code (pip name -> import name)."""
    imports = {"pytorch-lightning": "pytorch_lightning", "jsonargparse[signatures]":
               "jsonargparse", "pyyaml": "yaml", "espeakng-loader": "espeakng_loader",
               "pot": "ot", "qm9pack": "qm9pack"}
    project = PYPROJECT["project"]
    deps = list(project["dependencies"])
    for extra in ("audio", "molecules", "shapes"):
        deps += project["optional-dependencies"][extra]
    code = "\n".join(p.read_text() for top in ("diffplat", "domains")
                     for p in (ROOT / top).rglob("*.py"))
    for dep in deps:
        name = dep.split("=")[0].split(">")[0].split("<")[0].strip()
        module = imports.get(name, name.replace("-", "_"))
        used = (f"import {module}" in code or f"from {module}" in code
                or f'find_spec("{module}")' in code)  # data-only wheels are found, not imported
        assert used, (
            f"{name} is a dependency that nothing imports")


def test_wheel_carries_the_configs_and_an_installed_copy_finds_them(tmp_path):
    src = tmp_path / "src"  # a copy: setuptools writes build/ beside the sources
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("diffplat", "domains", "configs", "models"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(src),
                    "-w", str(tmp_path / "dist")], check=True, timeout=600,
                   capture_output=True)
    wheel = next((tmp_path / "dist").glob("diffplat-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*/*.yaml"))
    for cfg in shipped:
        assert f"diffplat/{cfg}" in names, cfg
    models = sorted(p.relative_to(ROOT / "models") for p in (ROOT / "models").rglob("*")
                    if p.is_file())  # assets/ (a classifier the metrics read) included
    assert models, "no shipped model in models/"
    for path in models:
        assert f"diffplat/shipped/{path}" in names, path
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE")
               for n in names)
    # unpack it as pip would and resolve a config from a folder that is not the checkout
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from diffplat.configs import resolve; from diffplat.models import shipped; "
            "print(resolve('configs/molecules/qm9-tiny.yaml')); "
            "print(*shipped().values(), sep='\\n')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         timeout=120, check=True)
    found, *models_found = [Path(line) for line in out.stdout.strip().splitlines()]
    assert found.is_file() and found.is_relative_to(site), found
    assert {m.name for m in models_found} == {p.parts[0] for p in models}
    assert all(m.is_relative_to(site) for m in models_found), models_found
