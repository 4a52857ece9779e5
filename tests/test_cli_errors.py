"""sample, evaluate, export, tune-steps and data: one line naming the right culprit, output
folders that are complete or absent, and flags refused where they do not apply (issue #23)."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffplat.cli import main
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _one_line(capsys) -> str:
    """The command's one line on stderr (library warnings aside), and no traceback."""
    text = capsys.readouterr().err
    err = [line for line in text.strip().splitlines() if line.startswith("diffplat")]
    assert len(err) == 1 and "Traceback" not in text, text
    return err[0]


def _leftovers(folder: Path) -> list[str]:
    """Temporary folders or files a command left beside its output."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("errs")
    cfg = write_config(tmp / "cfg.yaml", tmp / "run", max_steps=10, ckpt_every=10)
    assert main(["fit", "-c", str(cfg)]) == 0
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "model"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    return out


def _sample(source, out, *extra) -> list[str]:
    return ["sample", "--ckpt", str(source), "--num", "8", "--steps", "3", "--no-progress",
            "--out", str(out), *extra]


# -- 1, 2: checkpoints and exports whose weights disagree with their sizes -----------------
def test_checkpoint_whose_sizes_disagree_with_its_weights(ckpt, tmp_path, capsys):
    stored = torch.load(ckpt, weights_only=True)
    stored["hyper_parameters"]["backbone"]["init_args"]["hidden"] = 48  # weights are 32
    bad = tmp_path / "resized.ckpt"
    torch.save(stored, bad)
    assert main(_sample(bad, tmp_path / "s")) == 1
    line = _one_line(capsys)
    assert str(bad) in line
    name = line.split(": ")[-1].split(" is ")[0]  # the tensor the line names
    weights = stored["state_dict"]
    assert name in weights
    assert str(tuple(weights[name].shape)) in line and "48" in line.split(" but ")[1]
    assert not (tmp_path / "s").exists()
    del weights[name]  # incomplete
    torch.save(stored | {"hyper_parameters": torch.load(ckpt, weights_only=True)
                         ["hyper_parameters"]}, bad)
    assert main(_sample(bad, tmp_path / "s")) == 1
    line = _one_line(capsys)
    assert str(bad) in line and "incomplete" in line and name in line


def _copy(exported: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    return folder


@pytest.mark.parametrize("damage", ["truncated", "wrong-shape", "incomplete"])
def test_export_with_a_damaged_weights_file(exported, tmp_path, capsys, damage):
    from safetensors.torch import load_file, save_file

    folder = _copy(exported, tmp_path)
    w = folder / "model.safetensors"
    weights = load_file(w)
    first = sorted(weights)[0]
    if damage == "truncated":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "wrong-shape":
        weights[first] = torch.zeros(weights[first].numel() + 1)
        save_file(weights, w)
    else:
        del weights[first]
        save_file(weights, w)
    assert main(_sample(folder, tmp_path / "s")) == 1
    line = _one_line(capsys)
    assert str(w) in line
    if damage != "truncated":
        assert first in line


@pytest.fixture
def stateful_toy(monkeypatch):
    """The toy domain with a tensor sampling state (as shapes' mean/std), which it checks."""
    from domains.toy import ToyDomain

    save, restore = ToyDomain.sampling_state, ToyDomain.load_sampling_state

    def load(self, state):
        restore(self, state)
        if "scale" in state:
            self.scale = state["scale"].reshape(2)  # the toy's two dimensions

    monkeypatch.setattr(ToyDomain, "sampling_state",
                        lambda self: {**save(self), "scale": torch.ones(2)})
    monkeypatch.setattr(ToyDomain, "load_sampling_state", load)


@pytest.mark.parametrize("damage", ["truncated", "wrong-shape", "incomplete", "missing"])
def test_export_with_a_damaged_domain_state(ckpt, tmp_path, capsys, stateful_toy, damage):
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(folder)]) == 0
    capsys.readouterr()
    d = folder / "domain_state.safetensors"
    assert main(_sample(folder, tmp_path / "ok")) == 0  # the intact folder samples
    capsys.readouterr()
    if damage == "truncated":
        d.write_bytes(d.read_bytes()[:20])
    elif damage == "wrong-shape":
        save_file({"scale": torch.ones(5)}, d)
    elif damage == "incomplete":
        save_file({"other": torch.ones(2)}, d)
    else:
        d.unlink()
    assert main(_sample(folder, tmp_path / "s")) == 1
    line = _one_line(capsys)
    assert d.name in line and str(folder) in line
    if damage in ("wrong-shape", "incomplete"):
        assert "scale" in line


# -- 3, 4: export on a full disk, through a link, under a umask -------------------------------
def test_export_on_a_full_disk_leaves_nothing(ckpt, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    real = safetensors.torch.save_file

    def full(tensors, path, *a, **k):  # half a file, then the disk is full
        real(tensors, path, *a, **k)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "exp"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 1
    line = _one_line(capsys)
    assert "No space left on device" in line and str(out) in line
    assert not out.exists() and _leftovers(tmp_path) == []
    # an existing export asked to be overwritten keeps its content
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old")
    (out / "config.json").write_text("{}")
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--overwrite"]) == 1
    assert "No space left" in _one_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"old" and _leftovers(tmp_path) == []


def _on_small_tmpfs(tmp_path: Path, kib: int, *cmd: str) -> subprocess.CompletedProcess:
    """Run `diffplat CMD` with tmp_path/full a tmpfs of ``kib`` KiB (a user namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    full = tmp_path / "full"
    full.mkdir()
    script = (f"mount -t tmpfs -o size={kib}k none {full} || exit 77; "
              f"{sys.executable} -m diffplat.cli " + " ".join(cmd)
              + f"; rc=$?; echo left: $(ls -A {full}); exit $rc")
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                         text=True, env=ENV, cwd=ROOT, timeout=300)
    if res.returncode == 77 or "unshare:" in res.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()[:100]}")
    return res


@pytest.mark.parametrize("cmd", ["export", "sample"])
def test_real_full_disk_is_one_line_and_leaves_no_partial_output(ckpt, tmp_path, cmd):
    out = tmp_path / "full" / "out"
    args = (["export", "--ckpt", str(ckpt), "--out", str(out)] if cmd == "export" else
            ["sample", "--ckpt", str(ckpt), "--num", "6000", "--steps", "2", "--no-progress",
             "--device", "cpu", "--out", str(out)])
    res = _on_small_tmpfs(tmp_path, 8, *args)  # the export is ~20 KiB, the samples ~300
    lines = [line for line in res.stderr.strip().splitlines() if line.startswith("diffplat")]
    assert res.returncode == 1 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "No space left on device" in lines[0] and str(out) in lines[0]
    assert "requested and" not in lines[0]
    assert res.stdout.strip().splitlines()[-1] == "left:"  # nothing on the full disk


def test_export_refuses_links_in_its_target(ckpt, exported, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").symlink_to(victim)
    for extra in ([], ["--overwrite"]):
        assert main(["export", "--ckpt", str(ckpt), "--out", str(out), *extra]) == 1
        line = _one_line(capsys)
        assert "symbolic link" in line and str(out / "model.safetensors") in line
        assert victim.read_text() == "precious"
    link = tmp_path / "link"
    link.symlink_to(exported)  # the folder itself is a link (to another export)
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    assert main(["export", "--ckpt", str(ckpt), "--out", str(link), "--overwrite"]) == 1
    assert "symbolic link" in _one_line(capsys)
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before
    # the library function refuses too
    from diffplat.training.checkpoint import export, load_module

    with pytest.raises(ValueError, match="symbolic link"):
        export(load_module(ckpt), out)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("cmd", ["export", "sample"])
def test_outputs_honour_the_umask(ckpt, tmp_path, cmd):
    out = tmp_path / "o"
    old = os.umask(0o022)
    try:
        args = (["export", "--ckpt", str(ckpt), "--out", str(out), "--name", "m"]
                if cmd == "export" else _sample(ckpt, out))
        assert main(args) == 0
    finally:
        os.umask(old)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [out, *out.rglob("*")]}
    assert modes.pop(".") == 0o755
    assert modes and all(m == 0o644 for m in modes.values()), modes


# -- 5, 6: --device and --guidance are named, not the checkpoint or the learning rate ------
def test_unknown_device_names_the_option_and_the_valid_ones(ckpt, tmp_path, capsys):
    from diffplat.cli.options import devices

    for cmd in (_sample(ckpt, tmp_path / "s", "--device", "nosuch"),
                ["evaluate", "--ckpt", str(ckpt), "--num", "4", "--device", "nosuch"],
                ["tune-steps", "--ckpt", str(ckpt), "--sampler", "heun", "--nfe", "5",
                 "--device", "nosuch"]):
        assert main(cmd) == 1
        line = _one_line(capsys)
        assert "--device 'nosuch'" in line and str(ckpt) not in line
        assert line.endswith("valid: " + ", ".join(devices()))
    if not torch.cuda.is_available():
        assert main(_sample(ckpt, tmp_path / "s", "--device", "cuda:0")) == 1
        assert "--device 'cuda:0'" in _one_line(capsys)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("weight,needle", [("nan", "finite"), ("inf", "finite"),
                                           ("-5", ">= 0")])
def test_guidance_is_checked_before_any_work(tmp_path, capsys, weight, needle):
    # the checkpoint does not exist: the guidance is the first thing found wrong
    assert main(_sample(tmp_path / "none.ckpt", tmp_path / "s", "--guidance", weight)) == 1
    line = _one_line(capsys)
    assert "--guidance must be" in line and needle in line and weight in line
    assert "learning rate" not in line and not (tmp_path / "s").exists()
    from diffplat.sampling import check_guidance

    with pytest.raises(ValueError, match=needle):  # the library answers the same
        check_guidance(float(weight))


def test_nan_samples_name_the_weights_or_the_sampler_settings(ckpt, tmp_path, capsys,
                                                             monkeypatch):
    stored = torch.load(ckpt, weights_only=True)
    ema = [k for k in stored["state_dict"] if k.startswith("ema.") and
           stored["state_dict"][k].is_floating_point()][0]
    stored["state_dict"][ema].view(-1)[0] = float("nan")
    nan_ckpt = tmp_path / "nan.ckpt"
    torch.save(stored, nan_ckpt)
    assert main(_sample(nan_ckpt, tmp_path / "a", "--sampler", "heun")) == 1
    line = _one_line(capsys)
    assert "weights hold NaN" in line and "learning rate" not in line
    # finite weights whose output is NaN: the sampling settings are named
    from domains.toy import MLPBackbone

    monkeypatch.setattr(MLPBackbone, "forward", lambda self, x, *a, **k: x * float("nan"))
    assert main(_sample(ckpt, tmp_path / "b", "--sampler", "heun")) == 1
    line = _one_line(capsys)
    assert "finite weights" in line and "sampler heun" in line and "3 steps" in line
    assert "learning rate" not in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- 7, 9: sample writes its folder in one piece; a used --out is refused ----------------------
def test_sample_on_a_full_disk_leaves_nothing(ckpt, tmp_path, capsys, monkeypatch):
    real = np.save

    def full(file, arr, *a, **k):  # numpy's own words on a full disk, after a partial write
        real(file, arr, *a, **k)
        Path(file).write_bytes(Path(file).read_bytes()[:64])
        raise OSError(f"{arr.nbytes} requested and 64 written")

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "s"
    assert main(_sample(ckpt, out)) == 1
    line = _one_line(capsys)
    assert "No space left on device" in line and str(out) in line
    assert "requested and" not in line
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_used_out_folder_is_refused_unless_overwritten(ckpt, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sample(ckpt, out)) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "stale.npy").write_bytes(b"old run")
    assert main(_sample(ckpt, out, "--num", "4")) == 1  # argparse: the last --num wins
    line = _one_line(capsys)
    assert "not empty" in line and "--overwrite" in line and str(out) in line
    assert (out / "stale.npy").read_bytes() == b"old run"
    assert {p.name for p in out.iterdir()} == {*first, "stale.npy"}
    assert main(_sample(ckpt, out, "--num", "4", "--overwrite")) == 0
    assert {p.name for p in out.iterdir()} == set(first)  # nothing stale mixed in
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num"] == 4 == len(np.load(out / "samples.npy"))
    assert main(["evaluate", "--samples", str(out)]) == 0
    assert "toy: 4 samples" in capsys.readouterr().out
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces_only_what_the_command_wrote(ckpt, tmp_path, capsys,
                                                        monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for cmd in (_sample(ckpt, mine, "--overwrite"),
                ["export", "--ckpt", str(ckpt), "--out", str(mine), "--overwrite"]):
        assert main(cmd) == 1
        line = _one_line(capsys)
        assert "refusing to overwrite" in line and str(mine) in line
    (mine / "meta.json").write_text("{}")  # looks like a sample folder, but holds the cwd
    monkeypatch.chdir(mine)
    assert main(_sample(ckpt, ".", "--overwrite")) == 1
    assert "current folder" in _one_line(capsys)
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_a_mixed_sample_folder_is_refused_by_evaluate(ckpt, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sample(ckpt, out)) == 0
    meta = json.loads((out / "meta.json").read_text())
    stale = np.concatenate([np.load(out / "samples.npy")] * 2)  # files of an older run
    np.save(out / "samples.npy", stale)
    assert main(["evaluate", "--samples", str(out)]) == 1
    line = _one_line(capsys)
    assert f"holds {len(stale)} samples" in line and f"records {meta['num']}" in line


def test_an_out_folder_filled_meanwhile_is_not_mixed(ckpt, tmp_path, capsys, monkeypatch):
    import diffplat.cli.sample as sample_cli

    out = tmp_path / "s"
    real = sample_cli.generate

    def racing(args):  # another command writes the folder while this one samples
        result = real(args)
        out.mkdir()
        (out / "meta.json").write_text('{"num": 2}')
        return result

    monkeypatch.setattr(sample_cli, "generate", racing)
    assert main(_sample(ckpt, out)) == 1
    line = _one_line(capsys)
    assert "filled by another command" in line
    kept = Path(line.split("kept in ")[1])
    assert json.loads((kept / "meta.json").read_text())["num"] == 8  # nothing lost
    assert [p.name for p in out.iterdir()] == ["meta.json"]


def test_the_demo_reruns_its_sample_line():
    """`make demo` reruns into the same folders: its sample lines ask to overwrite."""
    lines = [line for line in (ROOT / "Makefile").read_text().splitlines()
             if "diffplat sample" in line]
    assert lines and all("--overwrite" in line for line in lines), lines


# -- 8: unwritable targets are found before the work -----------------------------------------
def test_unwritable_targets_are_refused_before_the_work(ckpt, tmp_path, capsys, monkeypatch):
    import diffplat.cli.evaluate as evaluate_cli
    import diffplat.tune

    def spent(*a, **k):
        raise AssertionError("the work ran before the target was checked")

    monkeypatch.setattr(evaluate_cli, "generate", spent)
    monkeypatch.setattr(diffplat.tune, "tune_steps", spent)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for target in (blocker / "m.json", tmp_path):  # under a file; a folder
        assert main(["evaluate", "--ckpt", str(ckpt), "--num", "4", "--json",
                     str(target)]) == 1
        assert str(target) in _one_line(capsys)
    own = tmp_path / "own.ckpt"
    shutil.copy(ckpt, own)
    (tmp_path / "own.ckpt.steps.json").mkdir()  # where tune-steps would write
    assert main(["tune-steps", "--ckpt", str(own), "--sampler", "heun", "--nfe", "5"]) == 1
    assert "own.ckpt.steps.json" in _one_line(capsys)


# -- 10: a flag that does not apply to the mode is refused -----------------------------------
@pytest.mark.parametrize("argv,flag", [
    (["evaluate", "--samples", "S", "--steps", "4"], "--steps"),
    (["evaluate", "--samples", "S", "--device", "cpu"], "--device"),
    (["evaluate", "--samples", "S", "--num", "4"], "--num"),
    (["evaluate", "--samples", "S", "--reference"], "--reference"),
    (["evaluate", "--ckpt", "C", "--reference", "--sampler", "heun"], "--sampler"),
    (["evaluate", "--ckpt", "C", "--reference", "--guidance", "2"], "--guidance"),
    (["evaluate", "--ckpt", "C", "--data", "D"], "--data"),
    (["evaluate", "--ckpt", "C", "--mask", "0"], "--mask"),
    (["sample", "--ckpt", "C", "--out", "O", "--resample", "3"], "--resample"),
    (["export", "--ckpt", "C", "--out", "O", "--metrics-command", "x"], "--metrics-command"),
    (["data", "info", "toy", "P", "--out", "O"], "--out"),
    (["data", "info", "toy", "P", "-o", "num=3"], "--option"),
    (["data", "prepare", "toy", "P"], "P"),
])
def test_flags_that_do_not_apply_to_the_mode_are_refused(tmp_path, capsys, argv, flag):
    argv = [a if a not in "SCDOP" else str(tmp_path / a) for a in argv]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "does not apply to" in line and flag in line and "goes with" in line
    assert not any((tmp_path / n).exists() for n in "SCDOP")


def test_reference_data_with_its_own_data_is_left_to_the_reference_mode():
    from diffplat.cli.evaluate import MODES, TABLE
    from diffplat.cli.options import refuse_unused

    assert refuse_unused({"reference": "--reference", "config": "--config",
                          "data": "--data", "num": "--num", "split": "--split",
                          "json": "--json"}, "reference", TABLE, MODES) is None


@pytest.mark.parametrize("module,argv", [
    ("sample", ["sample", "--ckpt", "C", "--out", "O"]),
    ("evaluate", ["evaluate", "--samples", "S"]),
    ("export", ["export", "--ckpt", "C", "--out", "O"]),
    ("data", ["data", "info", "toy", "P"]),
])
def test_every_flag_has_a_row_in_its_commands_table(module, argv, monkeypatch, tmp_path):
    import importlib

    cli = importlib.import_module(f"diffplat.cli.{module}")
    seen = {}
    real = cli.given_options

    def spy(parser, args):
        seen["dests"] = {a.dest for a in parser._actions if a.option_strings} - {"help"}
        return real(parser, args)

    monkeypatch.setattr(cli, "given_options", spy)
    main([a if a not in "SCOP" else str(tmp_path / a) for a in argv])
    assert seen["dests"] == set(cli.TABLE), seen["dests"] ^ set(cli.TABLE)
