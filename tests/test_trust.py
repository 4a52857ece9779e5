"""The trust rule (diffplat.trust) on every reader of a stored configuration, with a class
named in every form the parser accepts. The untrusted module writes a file when it is
imported and another when its class is built, so "refused before anything is imported" is
checked directly, not inferred from the message."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import diffplat
from diffplat.cli import main
from diffplat.training.checkpoint import build_module
from diffplat.trust import UntrustedClassError, check_class_paths, enforced
from tests.helpers import write_config

EVIL = "evil_trust_probe"


def _forms(name: str) -> dict[str, object]:
    """A class named in every form jsonargparse builds from."""
    return {
        "dict": {"class_path": f"{name}.Evil", "init_args": {}},
        "string": f"{name}.Evil",
        "json": json.dumps({"class_path": f"{name}.Evil"}),
        "yaml": f"class_path: {name}.Evil\ninit_args: {{}}\n",
        "nested": {"class_path": "domains.toy.ToyDomain",
                   "init_args": {"num_train": {"class_path": f"{name}.Evil"}}},
    }


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """An importable module outside the trusted packages that leaves traces."""
    folder = tmp_path_factory.mktemp("evil")
    (folder / f"{EVIL}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(folder / 'IMPORTED')!r}).write_text('x')\n"
        "from diffplat.domain import Domain\n"
        "class Evil(Domain):\n"
        "    def __init__(self, *a, **k):\n"
        f"        Path({str(folder / 'BUILT')!r}).write_text('x')\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    assert EVIL not in sys.modules


def _untouched(folder: Path) -> None:
    assert not (folder / "IMPORTED").exists() and not (folder / "BUILT").exists()
    assert EVIL not in sys.modules


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    cfg = write_config(tmp / "cfg.yaml", tmp / "run", max_steps=4, ckpt_every=4)
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp / "export")]) == 0
    assert main(["sample", "--ckpt", str(ckpt), "--num", "4", "--out",
                 str(tmp / "samples")]) == 0
    return cfg, ckpt, tmp / "export", tmp / "samples"


# -- the static walk --------------------------------------------------------------------------
@pytest.mark.parametrize("form", list(_forms(EVIL)))
def test_the_walk_refuses_every_form(evil, form):
    with pytest.raises(UntrustedClassError, match=f"{EVIL}.Evil"):
        check_class_paths({"domain": _forms(EVIL)[form]}, source="x")
    with pytest.raises(UntrustedClassError):  # inside a list too
        check_class_paths({"callbacks": [_forms(EVIL)[form]]}, source="x")
    _untouched(evil)


def test_the_walk_lets_trusted_classes_and_plain_strings_through():
    check_class_paths({"domain": {"class_path": "domains.toy.ToyDomain"},
                       "schedule": "cosine", "data_path": "data/qm9/qm9.npz",
                       "file": "weights.npz", "backbone": "domains.toy.MLPBackbone"})
    for bad in ("os.system", "this.Whatever", "subprocess.Popen"):  # importable, untrusted
        with pytest.raises(UntrustedClassError):
            check_class_paths({"x": bad})


def test_trusted_packages_can_be_extended_by_the_environment(evil, monkeypatch):
    monkeypatch.setenv("DIFFPLAT_TRUSTED_PACKAGES", f"other, {EVIL}")
    check_class_paths({"domain": _forms(EVIL)["dict"]})  # no error


# -- the policy behind it: it holds even where the walk would miss a form ---------------------
@pytest.mark.parametrize("form", ["dict", "string", "json", "yaml", "config-file"])
def test_the_import_policy_refuses_without_the_walk(evil, run, form, monkeypatch, tmp_path):
    _, ckpt, _, _ = run
    import diffplat.training.checkpoint as store

    monkeypatch.setattr(store, "check_class_paths", lambda *a, **k: None)
    if form == "config-file":  # jsonargparse also reads a class spec from a file path
        spec = tmp_path / "domain.yaml"
        spec.write_text(f"class_path: {EVIL}.Evil\n")
        value = str(spec)
    else:
        value = _forms(EVIL)[form]
    hparams = dict(torch.load(ckpt, weights_only=True)["hyper_parameters"])
    hparams["domain"] = value
    # a path is not taken as a class spec by parse_object (any error will do): what
    # matters is that nothing was imported
    expected = Exception if form == "config-file" else UntrustedClassError
    with pytest.raises(expected, match=None if form == "config-file" else f"{EVIL}.Evil"):
        build_module(hparams)
    _untouched(evil)


def test_the_policy_is_restored_afterwards():
    from jsonargparse._common import parsing_settings

    before = dict(parsing_settings)
    with enforced():
        assert parsing_settings["import_path_verdicts"]["*"] is False
    assert dict(parsing_settings) == before
    with pytest.raises(RuntimeError), enforced():
        raise RuntimeError("unrelated")
    assert dict(parsing_settings) == before


# -- every reader, every form ----------------------------------------------------------------
def _crafted_ckpt(ckpt: Path, out: Path, value) -> Path:
    stored = torch.load(ckpt, weights_only=True)
    stored["hyper_parameters"]["domain"] = value
    torch.save(stored, out)
    return out


def _crafted_export(export: Path, out: Path, value) -> Path:
    shutil.copytree(export, out)
    meta = json.loads((out / "config.json").read_text())
    meta["model"]["domain"] = value
    (out / "config.json").write_text(json.dumps(meta))
    return out


def _crafted_samples(samples: Path, out: Path, value) -> Path:
    shutil.copytree(samples, out)
    meta = json.loads((out / "meta.json").read_text())
    meta["domain"] = value
    (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.mark.parametrize("form", list(_forms(EVIL)))
def test_every_reader_refuses_every_form(evil, run, form, tmp_path, capsys):
    cfg, ckpt, export, samples = run
    value = _forms(EVIL)[form]
    bad_ckpt = _crafted_ckpt(ckpt, tmp_path / "evil.ckpt", value)
    bad_export = _crafted_export(export, tmp_path / "evil-export", value)
    bad_samples = _crafted_samples(samples, tmp_path / "evil-samples", value)
    out = str(tmp_path / "out")
    commands = [
        ["sample", "--ckpt", str(bad_ckpt), "--num", "2", "--out", out],
        ["sample", "--ckpt", str(bad_export), "--num", "2", "--out", out],
        ["evaluate", "--ckpt", str(bad_ckpt), "--num", "2"],
        ["evaluate", "--ckpt", str(bad_export), "--reference"],
        ["evaluate", "--samples", str(bad_samples)],
        ["export", "--ckpt", str(bad_ckpt), "--out", out],
        ["tune-steps", "--ckpt", str(bad_ckpt), "--sampler", "euler", "--nfe", "3"],
        ["fit", "-c", str(cfg), "--ckpt_path", str(bad_ckpt),
         "--trainer.default_root_dir", str(tmp_path / "fit")],
        ["validate", "-c", str(cfg), "--ckpt_path", str(bad_ckpt)],
    ]
    for cmd in commands:
        code = main(cmd)
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0, cmd
        assert len(err) == 1 and "refusing to import" in err[0] and EVIL in err[0], (cmd, err)
    for source in (bad_ckpt, bad_export):
        with pytest.raises(UntrustedClassError, match=EVIL):
            diffplat.load(source)
    _untouched(evil)
    assert not Path(out).exists() or not any(Path(out).iterdir())  # nothing was written


@pytest.mark.parametrize("form", ["string", "yaml"])
def test_fit_resume_holds_the_policy_without_the_walk(evil, run, form, monkeypatch, tmp_path,
                                                      capsys):
    cfg, ckpt, _, _ = run
    import diffplat.training.lightning as engine

    monkeypatch.setattr(engine, "check_class_paths", lambda *a, **k: None)
    bad = _crafted_ckpt(ckpt, tmp_path / "evil.ckpt", _forms(EVIL)[form])
    assert main(["fit", "-c", str(cfg), "--ckpt_path", str(bad),
                 "--trainer.default_root_dir", str(tmp_path / "fit")]) != 0
    assert "refusing to import" in capsys.readouterr().err
    _untouched(evil)


def test_an_export_may_point_only_constructor_options_at_its_assets(run, tmp_path):
    _, _, export, _ = run
    folder = _crafted_export(export, tmp_path / "assets", {"class_path": "domains.toy.ToyDomain"})
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["domain"] = json.loads((export / "config.json").read_text())["model"]["domain"]
    (folder / "assets").mkdir()
    (folder / "assets" / "x.txt").write_text("x")
    meta["assets"] = {"metrics": "assets/x.txt"}  # would replace the domain's method
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'metrics' is not an option of ToyDomain"):
        diffplat.load(folder)
