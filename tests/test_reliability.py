"""The cases of docs/reliability.md that were broken: runs that keep their checkpoint, one
trust rule for checkpoints, non-finite steps, bad input answered in one line."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffplat.cli import main
from diffplat.training.checkpoint import (
    AtomicCheckpointIO,
    NonFiniteCheckpointError,
    load_module,
)
from tests.helpers import state_equal, write_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
NO_CKPT = 100_000  # a ModelCheckpoint cadence that never fires: only Autosave writes


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if line.startswith("diffplat")]
    assert len(err) == 1, err
    return err[0]


def _ckpt(root: Path) -> dict:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)


# -- checkpoints that are always there -------------------------------------------------------
def test_autosave_writes_last_by_steps_whatever_the_validation_cadence(tmp_path):
    cfg = write_config(tmp_path / "a.yaml", tmp_path / "run", max_steps=30, ckpt_every=NO_CKPT,
                       extra="  decay_steps: 30\n")
    seen = []

    class Spy(AtomicCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            seen.append(checkpoint["global_step"])
            super().save_checkpoint(checkpoint, path, storage_options)

    import diffplat.training.lightning as train

    saved, train.AtomicCheckpointIO = train.AtomicCheckpointIO, Spy
    try:
        assert main(["fit", "-c", str(cfg), "--autosave.every_n_steps", "10",
                     "--autosave.every_seconds", "0"]) == 0
    finally:
        train.AtomicCheckpointIO = saved
    assert seen[:3] == [10, 20, 30]


def test_autosave_by_wall_time(tmp_path):
    cfg = write_config(tmp_path / "t.yaml", tmp_path / "run", max_steps=12, ckpt_every=NO_CKPT)
    res = subprocess.run([sys.executable, "-m", "diffplat.cli", "fit", "-c", str(cfg),
                          "--autosave.every_n_steps", "0", "--autosave.every_seconds", "0.2",
                          "--trainer.callbacks+=tests.helpers.Sleep",
                          "--trainer.callbacks.seconds=0.1"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _ckpt(tmp_path / "run")["global_step"] == 12


def _start(cfg: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "diffplat.cli", "fit", "-c", str(cfg),
                             "--trainer.callbacks+=tests.helpers.Sleep",
                             "--trainer.callbacks.seconds=0.03", *extra],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_to_the_same_weights(tmp_path, sig):
    """Killed mid-run with a rare validation cadence, rerun with --ckpt_path last: at most
    one autosave interval is lost and the result equals the uninterrupted run's."""
    steps = 120
    cfg = write_config(tmp_path / "k.yaml", tmp_path / "run", max_steps=steps,
                       ckpt_every=NO_CKPT)
    autosave = ["--autosave.every_n_steps", "25", "--autosave.every_seconds", "0"]
    proc = _start(cfg, *autosave)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 120
        while not last.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert last.exists(), "no autosave within 2 minutes"
        time.sleep(0.5)
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    step = _ckpt(tmp_path / "run")["global_step"]
    assert 0 < step < steps
    if sig == signal.SIGKILL:  # the last autosave; SIGTERM saves where it stopped
        assert step % 25 == 0
    res = subprocess.run([sys.executable, "-m", "diffplat.cli", "fit", "-c", str(cfg),
                          "--ckpt_path", "last", *autosave], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    straight = write_config(tmp_path / "s.yaml", tmp_path / "straight", max_steps=steps,
                            ckpt_every=NO_CKPT)
    res = subprocess.run([sys.executable, "-m", "diffplat.cli", "fit", "-c", str(straight)],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]  # same process settings (one thread)
    a, b = _ckpt(tmp_path / "run"), _ckpt(tmp_path / "straight")
    assert a["global_step"] == b["global_step"] == steps
    assert state_equal(a["state_dict"], b["state_dict"])


def test_sigterm_saves_where_it_stopped(tmp_path):
    cfg = write_config(tmp_path / "g.yaml", tmp_path / "run", max_steps=5000,
                       ckpt_every=NO_CKPT)
    proc = _start(cfg, "--autosave.every_n_steps", "0", "--autosave.every_seconds", "0")
    try:
        deadline = time.time() + 120
        while not (tmp_path / "run" / "config.yaml").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    step = _ckpt(tmp_path / "run")["global_step"]
    assert 0 < step < 5000  # only the SIGTERM save can have written it


def test_ckpt_path_last_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    cfg = write_config(tmp_path / "f.yaml", tmp_path / "run", max_steps=3)
    assert main(["fit", "-c", str(cfg), "--ckpt_path", "last"]) == 0
    line = _one_line(capsys)
    assert "no checkpoint at" in line and "starting fresh" in line
    assert _ckpt(tmp_path / "run")["global_step"] == 3
    other = write_config(tmp_path / "v.yaml", tmp_path / "none", max_steps=3)
    assert main(["validate", "-c", str(other), "--ckpt_path", "last"]) == 2
    assert "no checkpoint at" in _one_line(capsys)


def test_stale_temporaries_of_killed_saves_are_removed(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    stale = [folder / ".last.ckpt.k3j2h1.tmp", folder / ".last.ckpt.x9y8z7.tmp"]
    for f in stale:
        f.write_bytes(b"x" * 1000)
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "run", max_steps=2)
    assert main(["fit", "-c", str(cfg)]) == 0
    assert not any(f.exists() for f in stale)
    assert not list(folder.glob(".*.tmp"))


def test_resume_continues_the_same_wandb_run(tmp_path):
    cfg = write_config(tmp_path / "w.yaml", tmp_path / "run", max_steps=6, ckpt_every=3)
    cfg.write_text(cfg.read_text().replace("  logger: false\n", ""))
    assert main(["fit", "-c", str(cfg)]) == 0
    first = _ckpt(tmp_path / "run")["diffplat"]["wandb_run_id"]
    assert first
    assert main(["fit", "-c", str(cfg), "--trainer.max_steps", "9",
                 "--ckpt_path", "last"]) == 0
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{first}") for r in runs)
    assert _ckpt(tmp_path / "run")["diffplat"]["wandb_run_id"] == first


# -- restored models: explicit flags and the trust rule --------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rel")
    cfg = write_config(tmp / "cfg.yaml", tmp / "run", max_steps=10, ckpt_every=10)
    assert main(["fit", "-c", str(cfg)]) == 0
    return cfg, tmp / "run" / "checkpoints" / "last.ckpt"


def test_validate_honours_safe_overrides_and_refuses_the_others(trained, capsys):
    cfg, ckpt = trained
    assert main(["validate", "-c", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    assert "val/mmd2" in capsys.readouterr().out  # the config samples 256 points
    assert main(["validate", "-c", str(cfg), "--ckpt_path", str(ckpt),
                 "--model.sample_num", "0"]) == 0
    assert "val/mmd2" not in capsys.readouterr().out
    assert main(["validate", "-c", str(cfg), "--ckpt_path", str(ckpt),
                 "--model.backbone.init_args.hidden", "64"]) == 2
    line = _one_line(capsys)
    assert "--model.backbone.init_args.hidden" in line and "32" in line
    assert main(["validate", "-c", str(cfg), "--ckpt_path", str(ckpt),
                 "--model.lr", "0.5"]) == 2
    assert "--model.lr" in _one_line(capsys)


def test_fit_resume_lets_explicit_optimisation_flags_win(trained, tmp_path):
    cfg, ckpt = trained
    stored = torch.load(ckpt, weights_only=True)
    stored["hyper_parameters"]["lr"] = 0.5  # a stored value must not beat the flag
    crafted = tmp_path / "lr.ckpt"
    torch.save(stored, crafted)
    assert main(["fit", "-c", str(cfg), "--trainer.max_steps", "12", "--ckpt_path",
                 str(crafted), "--trainer.default_root_dir", str(tmp_path / "r"),
                 "--model.lr", "0.0001"]) == 0
    assert _ckpt(tmp_path / "r")["hyper_parameters"]["lr"] == 0.0001


def test_no_checkpoint_path_instantiates_untrusted_classes(trained, tmp_path, capsys):
    cfg, ckpt = trained
    (tmp_path / "evilpkg.py").write_text(
        "from pathlib import Path\n"
        f"class Evil:\n    def __init__(self, *a, **k):\n"
        f"        Path({str(tmp_path / 'RAN')!r}).write_text('x')\n")
    stored = torch.load(ckpt, weights_only=True)
    stored["hyper_parameters"]["backbone"] = {"class_path": "evilpkg.Evil", "init_args": {}}
    crafted = tmp_path / "evil.ckpt"
    torch.save(stored, crafted)
    sys.path.insert(0, str(tmp_path))
    try:
        for cmd in (["fit", "-c", str(cfg), "--ckpt_path", str(crafted)],
                    ["validate", "-c", str(cfg), "--ckpt_path", str(crafted)],
                    ["sample", "--ckpt", str(crafted), "--num", "2", "--out",
                     str(tmp_path / "s")],
                    ["export", "--ckpt", str(crafted), "--out", str(tmp_path / "e")]):
            assert main(cmd) != 0
            assert "refusing to import 'evilpkg.Evil'" in _one_line(capsys)
    finally:
        sys.path.remove(str(tmp_path))
    assert not (tmp_path / "RAN").exists()


def test_truncated_checkpoint_is_one_line(trained, tmp_path, capsys):
    cfg, ckpt = trained
    bad = tmp_path / "run" / "checkpoints" / "last.ckpt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    assert main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(tmp_path / "run"),
                 "--ckpt_path", "last"]) == 2
    line = _one_line(capsys)
    assert "cannot read checkpoint" in line and "last.ckpt" in line and "truncated" in line
    assert main(["sample", "--ckpt", str(bad), "--num", "2", "--out",
                 str(tmp_path / "s")]) == 1
    assert "cannot read checkpoint" in _one_line(capsys)


# -- non-finite steps -------------------------------------------------------------------------
def _nan_grad_config(tmp_path: Path, root: Path) -> Path:
    cfg = write_config(tmp_path / "n.yaml", root, max_steps=30, ckpt_every=1)
    cfg.write_text(cfg.read_text().replace(
        "  backbone:\n    class_path: domains.toy.MLPBackbone\n    init_args:\n"
        "      hidden: 32\n      depth: 2\n",
        "  backbone:\n    class_path: tests.helpers.NaNGradBackbone\n"
        "    init_args: {hidden: 32, depth: 2, nan_from: 8}\n"))
    return cfg


def test_nonfinite_gradients_with_a_finite_loss_stop_before_the_step(tmp_path, capsys):
    cfg = _nan_grad_config(tmp_path, tmp_path / "stop")
    assert main(["fit", "-c", str(cfg)]) == 1
    line = _one_line(capsys)
    assert "non-finite gradients at step 7" in line
    ckpt = _ckpt(tmp_path / "stop")
    assert ckpt["global_step"] == 7
    floats = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in floats)


def test_skip_mode_skips_nonfinite_gradients_and_keeps_finite_weights(tmp_path):
    cfg = _nan_grad_config(tmp_path, tmp_path / "skip")
    assert main(["fit", "-c", str(cfg), "--model.on_nonfinite", "skip",
                 "--model.max_skipped_fraction", "1"]) == 0  # no limit: the skips themselves
    ckpt = _ckpt(tmp_path / "skip")
    assert int(ckpt["state_dict"]["skipped_batches"]) == 30 - 7
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if v.is_floating_point())


def test_a_nonfinite_checkpoint_is_never_written(tmp_path):
    good = {"state_dict": {"w": torch.ones(3)}, "global_step": 1}
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(good, path)
    bad = {"state_dict": {"w": torch.tensor([1.0, float("nan"), 2.0])}, "global_step": 2}
    with pytest.raises(NonFiniteCheckpointError, match="w"):
        AtomicCheckpointIO().save_checkpoint(bad, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_run_that_ends_with_nonfinite_weights_fails(trained):
    from diffplat.training.module import NonFiniteLossError

    module = load_module(trained[1])
    with torch.no_grad():
        next(module.backbone.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="non-finite tensors"):
        module.on_train_end()


def test_full_disk_while_saving_is_one_line_and_keeps_the_last_file(trained, tmp_path,
                                                                    monkeypatch, capsys):
    import diffplat.training.atomic as ck

    cfg, _ = trained
    root = tmp_path / "run"
    assert main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(root),
                 "--trainer.max_steps", "5"]) == 0
    before = (root / "checkpoints" / "last.ckpt").read_bytes()

    def full(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ck.torch, "save", full)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 1024}))
    assert main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(root),
                 "--trainer.max_steps", "10", "--ckpt_path", "last"]) == 1
    line = _one_line(capsys)
    assert "No space left on device" in line and "last.ckpt" in line
    assert (root / "checkpoints" / "last.ckpt").read_bytes() == before
    assert not list((root / "checkpoints").glob(".*.tmp"))


# -- bad input: one line, nothing lost ---------------------------------------------------------
def test_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: 3\n model: [\n")
    for cmd in ("fit", "compare", "evaluate"):
        extra = ["--reference"] if cmd == "evaluate" else []
        assert main([cmd, "-c", str(bad), *extra]) != 0
        line = _one_line(capsys)
        assert str(bad) in line and "line 3" in line and "YAML syntax error" in line


def test_a_top_level_list_is_refused_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "list.yaml"
    bad.write_text("- trainer\n- model\n")
    assert main(["fit", "-c", str(bad)]) != 0
    line = _one_line(capsys)
    assert str(bad) in line and "mapping" in line


def test_sample_checks_out_and_options_before_sampling(trained, tmp_path, capsys):
    _, ckpt = trained
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    base = ["sample", "--ckpt", str(ckpt), "--num", "4", "--no-progress"]
    assert main([*base, "--out", str(existing)]) == 1
    assert "is an existing file" in _one_line(capsys)
    assert existing.read_text() == "keep me"
    assert main([*base, "--out", str(tmp_path / "o"), "-o", "colour=3"]) == 1
    line = _one_line(capsys)
    assert "unknown option(s) colour" in line and "valid:" in line
    assert main([*base, "--out", str(tmp_path / "o"), "--sampler", "ddim", "-o", "eta=-1"]) == 1
    assert "sampler 'ddim': eta must be a number >= 0, got -1" in _one_line(capsys)
    assert main([*base, "--out", str(tmp_path / "o"), "--steps", "0"]) == 1
    assert "--steps must be an integer >= 1" in _one_line(capsys)
    assert main([*base, "--out", str(tmp_path / "o"), "--batch-size", "0"]) == 1
    assert "--batch-size must be an integer >= 1" in _one_line(capsys)


def test_read_only_output_is_one_line(trained, tmp_path, capsys, monkeypatch):
    _, ckpt = trained
    out = tmp_path / "ro"

    def refuse(self, data):
        raise PermissionError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    assert main(["sample", "--ckpt", str(ckpt), "--num", "4", "--out", str(out)]) == 1
    line = _one_line(capsys)
    assert "Read-only file system" in line and str(out) in line


def test_data_info_audio_names_a_corrupt_file(tmp_path, capsys):
    folder = tmp_path / "clips" / "train" / "yes"
    folder.mkdir(parents=True)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    assert main(["data", "info", "audio", str(tmp_path / "clips")]) == 1
    line = _one_line(capsys)
    assert "broken.wav" in line and "not a readable audio file" in line
