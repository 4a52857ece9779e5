"""Run safety (issue #23): one writer per run folder, a stop that says it stopped (exit
128 + signal, a checkpoint at the step it arrived, SIGINT as SIGTERM), optimisation flags
that reach the optimizer on resume, checkpoints that honour the umask, and one line for
the configuration mistakes and non-finite batches that used to give tracebacks or blame
the learning rate."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from diffplat.cli import main
from diffplat.training import runlock
from diffplat.training.callbacks import RunStopped
from diffplat.training.checkpoint import AtomicCheckpointIO, remove_stale_temporaries
from diffplat.training.optim import warmup_cosine
from tests.helpers import state_equal, write_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
NO_CKPT = 100_000  # a ModelCheckpoint cadence that never fires: only Autosave writes


def _lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.strip().splitlines()
            if line.startswith("diffplat")]


def _one_line(capsys) -> str:
    err = _lines(capsys)
    assert len(err) == 1, err
    return err[0]


def _ckpt(root: Path) -> dict:
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)


def _popen(*args: str, **kw) -> subprocess.Popen:
    # SIGINT at its default (a test runner in the background may ignore it, and children
    # inherit that), so that the child sees Ctrl-C as a terminal user's run would
    return subprocess.Popen([sys.executable, "-m", "diffplat.cli", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kw)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert path.exists(), f"{path} did not appear"


class SignalAt(pl.Callback):
    """Sends ``signum`` to this very process after optimizer step ``step``."""

    def __init__(self, step: int = 5, signum: int = int(signal.SIGTERM)):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


# -- 1. one writer per run folder -------------------------------------------------------------
def test_a_second_fit_in_a_live_run_folder_is_refused_and_the_first_completes(tmp_path):
    steps = 600  # >= 30 s at 0.05 s a step: it outlasts the second run's start-up
    first = write_config(tmp_path / "a.yaml", tmp_path / "run", max_steps=steps,
                         ckpt_every=NO_CKPT)
    proc = _popen("fit", "-c", str(first), "--autosave.every_n_steps", "1",
                  "--autosave.every_seconds", "0", "--trainer.callbacks+=tests.helpers.Sleep",
                  "--trainer.callbacks.seconds=0.05")
    try:
        _wait_for(tmp_path / "run" / "checkpoints" / "last.ckpt", proc)
        config_before = (tmp_path / "run" / "config.yaml").read_text()
        lock = json.dumps(runlock._owner(tmp_path / "run" / runlock.LOCK_FILE))
        assert str(proc.pid) in lock
        # the second run: another learning rate, its own config.yaml to write, the same folder
        second = write_config(tmp_path / "b.yaml", tmp_path / "run", max_steps=5)
        second.write_text(second.read_text().replace("lr: 0.003", "lr: 0.0007"))
        res = subprocess.run([sys.executable, "-m", "diffplat.cli", "fit", "-c", str(second)],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("diffplat")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert f"run folder {tmp_path / 'run'} is in use by pid {proc.pid}" in lines[0]
    assert proc.returncode == 0, err[-2000:]
    final = _ckpt(tmp_path / "run")
    assert final["global_step"] == steps and final["hyper_parameters"]["lr"] == 0.003
    assert int(final["state_dict"]["ema.num_updates"]) == steps  # one run, every step once
    assert (tmp_path / "run" / "config.yaml").read_text() == config_before
    assert not (tmp_path / "run" / runlock.LOCK_FILE).exists()  # released at the end


def test_a_live_lock_is_refused_before_anything_is_written_and_a_stale_one_taken_over(
        tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom diffplat.training import runlock\n"
         f"runlock.acquire({str(run)!r})\nprint('held', flush=True)\ntime.sleep(600)\n"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = write_config(tmp_path / "c.yaml", run, max_steps=3)
        assert main(["fit", "-c", str(cfg)]) == 1
        line = _one_line(capsys)
        assert f"is in use by pid {holder.pid}" in line and str(run) in line
        assert sorted(p.name for p in run.iterdir()) == [runlock.LOCK_FILE]  # nothing else
        holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays, stale
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (run / runlock.LOCK_FILE).exists()
    assert main(["fit", "-c", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert f"taking over the stale lock {run / runlock.LOCK_FILE} of pid {holder.pid}" in err
    assert _ckpt(run)["global_step"] == 3
    assert not (run / runlock.LOCK_FILE).exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "run", max_steps=3)
    assert main(["fit", "-c", str(cfg), "--trainer.max_steps", "-5"]) == 2
    line = _one_line(capsys)
    assert "max_steps" in line and "-5" in line
    assert not (tmp_path / "run" / runlock.LOCK_FILE).exists()
    assert main(["fit", "-c", str(cfg)]) == 0


def test_cleanup_removes_only_the_temporaries_of_dead_writers(tmp_path):
    import socket

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    try:
        files = {name: tmp_path / name for name in (
            f".last.ckpt.pid{live.pid}~{host}~ab12.tmp",     # a live writer: kept
            f".last.ckpt.pid{dead.pid}~{host}~cd34.tmp",     # its writer died: removed
            ".last.ckpt.pid7~elsewhere~ef56.tmp",            # another host, fresh: kept
            ".last.ckpt.pid8~elsewhere~gh78.tmp",            # another host, old: removed
            ".last.ckpt.k3j2h1.tmp")}                        # no owner (older versions)
        for f in files.values():
            f.write_bytes(b"x")
        old = time.time() - 7200
        os.utime(files[".last.ckpt.pid8~elsewhere~gh78.tmp"], (old, old))
        removed = {f.name for f in remove_stale_temporaries(tmp_path)}
    finally:
        live.kill()
        live.wait()
    assert removed == {f".last.ckpt.pid{dead.pid}~{host}~cd34.tmp",
                       ".last.ckpt.pid8~elsewhere~gh78.tmp", ".last.ckpt.k3j2h1.tmp"}
    assert all(f.exists() == (f.name not in removed) for f in files.values())


def test_a_written_temporary_names_its_writer(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}},
                                         tmp_path / "last.ckpt")
    assert len(seen) == 1 and seen[0].startswith(f".last.ckpt.pid{os.getpid()}~")
    assert not remove_stale_temporaries(tmp_path)


# -- 2, 3. a stop by a signal: saved where it arrived, exit 128 + signal ----------------------
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_at_its_step_and_exits_128_plus_its_number(tmp_path, capsys,
                                                                   signum, code):
    cfg = write_config(tmp_path / "s.yaml", tmp_path / "run", max_steps=500,
                       ckpt_every=NO_CKPT)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        code_now = main(["fit", "-c", str(cfg), "--autosave.every_n_steps", "0",
                         "--autosave.every_seconds", "0",
                         "--trainer.callbacks+=tests.test_run_safety.SignalAt",
                         "--trainer.callbacks.step=7",
                         f"--trainer.callbacks.signum={int(signum)}"])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, before)
    assert code_now == code
    lines = _lines(capsys)
    assert lines[-1].startswith(f"diffplat fit: stopped by {signum.name}")
    assert "at step 7 of 500" in lines[-1] and "--ckpt_path last" in lines[-1]
    assert f"saved {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}" in lines[-1]
    assert _ckpt(tmp_path / "run")["global_step"] == 7  # only the stop can have saved it


def test_python_fit_raises_when_a_signal_stops_the_run(tmp_path):
    from diffplat.training import fit

    cfg = write_config(tmp_path / "p.yaml", tmp_path / "run", max_steps=300, ckpt_every=NO_CKPT)
    with pytest.raises(RunStopped, match="at step 4 of 300") as info:
        fit(cfg, "--trainer.callbacks+=tests.test_run_safety.SignalAt",
            "--trainer.callbacks.step=4")
    assert info.value.exit_code == 143 and info.value.step == 4
    assert _ckpt(tmp_path / "run")["global_step"] == 4


def test_ctrl_c_on_a_real_run_saves_and_resumes_to_the_same_weights(tmp_path):
    steps = 120
    cfg = write_config(tmp_path / "k.yaml", tmp_path / "run", max_steps=steps,
                       ckpt_every=NO_CKPT)
    autosave = ["--autosave.every_n_steps", "0", "--autosave.every_seconds", "0"]
    proc = _popen("fit", "-c", str(cfg), *autosave, "--trainer.callbacks+=tests.helpers.Sleep",
                  "--trainer.callbacks.seconds=0.03")
    try:
        _wait_for(tmp_path / "run" / "config.yaml", proc)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    step = _ckpt(tmp_path / "run")["global_step"]
    assert 0 < step < steps  # autosave is off: the Ctrl-C save wrote it
    assert f"stopped by SIGINT (Ctrl-C) at step {step} of {steps}" in err
    res = subprocess.run([sys.executable, "-m", "diffplat.cli", "fit", "-c", str(cfg),
                          "--ckpt_path", "last", *autosave], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    straight = write_config(tmp_path / "t.yaml", tmp_path / "straight", max_steps=steps,
                            ckpt_every=NO_CKPT)
    res = subprocess.run([sys.executable, "-m", "diffplat.cli", "fit", "-c", str(straight)],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = _ckpt(tmp_path / "run"), _ckpt(tmp_path / "straight")
    assert a["global_step"] == b["global_step"] == steps
    assert state_equal(a["state_dict"], b["state_dict"])


@pytest.mark.parametrize("fit_exit,runs_sample", [(143, False), (0, True)])
def test_make_demo_stops_when_fit_was_stopped(tmp_path, fit_exit, runs_sample):
    """The real Makefile with a stand-in diffplat that logs its calls and exits as a
    stopped (or finished) run would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fake = bin_dir / "diffplat"
    fake.write_text(f"#!/bin/sh\necho \"$1\" >> {log}\n"
                    f"if [ \"$1\" = fit ]; then exit {fit_exit}; fi\nexit 0\n")
    fake.chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.touch()
    res = subprocess.run(["make", "-s", "demo", f"BIN={bin_dir}", f"STAMP={stamp}",
                          f"DEMO_DIR={tmp_path / 'demo'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    calls = log.read_text().split()
    assert "fit" in calls
    assert ("sample" in calls) == runs_sample
    assert (res.returncode == 0) == runs_sample


# -- 4. optimisation flags reach the optimizer on resume ---------------------------------------
def test_resume_applies_lr_weight_decay_and_betas_to_the_restored_optimizer(tmp_path):
    cfg = write_config(tmp_path / "r.yaml", tmp_path / "run", max_steps=10, ckpt_every=NO_CKPT)
    assert main(["fit", "-c", str(cfg)]) == 0
    stored = _ckpt(tmp_path / "run")["optimizer_states"][0]["param_groups"][0]
    assert stored["initial_lr"] == 0.003 and stored["weight_decay"] == 0.0
    assert main(["fit", "-c", str(cfg), "--trainer.max_steps", "14", "--ckpt_path", "last",
                 "--model.lr", "1e-5", "--model.weight_decay", "0.5",
                 "--model.betas", "[0.8, 0.95]"]) == 0
    ckpt = _ckpt(tmp_path / "run")
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["weight_decay"] == 0.5 and tuple(group["betas"]) == (0.8, 0.95)
    assert group["initial_lr"] == 1e-5
    assert ckpt["lr_schedulers"][0]["base_lrs"] == [1e-5]
    # the schedule continues at its step, from the new base (decay over the new max_steps)
    assert group["lr"] == pytest.approx(1e-5 * warmup_cosine(14, 5, 14, 0.1), rel=1e-12)


def test_resume_without_flags_leaves_the_optimizer_as_stored(tmp_path):
    cfg = write_config(tmp_path / "r.yaml", tmp_path / "run", max_steps=10, ckpt_every=NO_CKPT)
    assert main(["fit", "-c", str(cfg), "--trainer.max_steps", "6"]) == 0
    assert main(["fit", "-c", str(cfg), "--ckpt_path", "last"]) == 0
    straight = write_config(tmp_path / "s.yaml", tmp_path / "straight", max_steps=10,
                            ckpt_every=NO_CKPT)
    assert main(["fit", "-c", str(straight)]) == 0
    a, b = _ckpt(tmp_path / "run"), _ckpt(tmp_path / "straight")
    assert a["optimizer_states"][0]["param_groups"] == b["optimizer_states"][0]["param_groups"]


# -- 5. permissions -----------------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}},
                                             tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_fitted_step_schedules_honour_the_umask(tmp_path, umask, mode):
    from diffplat.training.checkpoint import save_step_schedule, step_schedules_path

    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"weights")
    old = os.umask(umask)
    try:
        save_step_schedule(ckpt, {"sampler": "euler", "steps": 3, "levels": [1.0, 0.5, 0.0]})
    finally:
        os.umask(old)
    assert step_schedules_path(ckpt).stat().st_mode & 0o777 == mode


# -- 6. one line instead of a traceback ---------------------------------------------------------
def test_an_empty_config_file_is_named(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["fit", "-c", str(empty)]) != 0
    line = _one_line(capsys)
    assert str(empty) in line and "empty" in line


def test_ckpt_path_hpc_with_a_bad_file_is_one_line(tmp_path, capsys):
    root = tmp_path / "run"
    root.mkdir()
    (root / "hpc_ckpt_3.ckpt").write_bytes(b"not a checkpoint at all")
    cfg = write_config(tmp_path / "c.yaml", root, max_steps=3)
    assert main(["fit", "-c", str(cfg), "--ckpt_path", "hpc"]) == 2
    line = _one_line(capsys)
    assert "cannot read checkpoint" in line and "hpc_ckpt_3.ckpt" in line
    assert main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(tmp_path / "none"),
                 "--ckpt_path", "hpc"]) == 2
    assert "no hpc_ckpt_<n>.ckpt in" in _one_line(capsys)


def test_a_checkpoint_whose_sizes_disagree_with_its_weights_is_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "run", max_steps=3)
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = _ckpt(tmp_path / "run")
    ckpt["hyper_parameters"]["backbone"]["init_args"]["hidden"] = 48  # weights say 32
    crafted = tmp_path / "sizes.ckpt"
    torch.save(ckpt, crafted)
    capsys.readouterr()
    assert main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(tmp_path / "r2"),
                 "--ckpt_path", str(crafted)]) == 2
    line = _lines(capsys)[-1]  # after the note that the config differs from the file
    assert "error:" in line
    from diffplat.training.checkpoint import build_module

    model = build_module(ckpt["hyper_parameters"]).state_dict()
    first = next(k for k, v in model.items() if v.shape != ckpt["state_dict"][k].shape)
    assert str(crafted) in line and f" {first} " in line
    assert str(tuple(ckpt["state_dict"][first].shape)) in line  # the file's shape
    assert str(tuple(model[first].shape)) in line  # the configuration's


# -- 7, 8. non-finite batches ------------------------------------------------------------------
def _nan_grad_config(tmp_path: Path, root: Path, steps: int = 60) -> Path:
    cfg = write_config(tmp_path / "n.yaml", root, max_steps=steps, ckpt_every=NO_CKPT)
    cfg.write_text(cfg.read_text().replace(
        "  backbone:\n    class_path: domains.toy.MLPBackbone\n    init_args:\n"
        "      hidden: 32\n      depth: 2\n",
        "  backbone:\n    class_path: tests.helpers.NaNGradBackbone\n"
        "    init_args: {hidden: 32, depth: 2, nan_from: 16}\n"))
    return cfg


def test_skipping_most_batches_fails_naming_the_option(tmp_path, capsys):
    cfg = _nan_grad_config(tmp_path, tmp_path / "run")
    assert main(["fit", "-c", str(cfg), "--model.on_nonfinite", "skip"]) == 1
    line = _one_line(capsys)
    # batches 16.. are skipped; the 11th skip (batch 26) passes 10% of 100 batches
    assert "11 of 26 batches skipped" in line and "model.max_skipped_fraction=0.1" in line


def test_the_skipped_count_is_printed_at_the_end_of_fit(tmp_path, capsys):
    cfg = _nan_grad_config(tmp_path, tmp_path / "run")
    assert main(["fit", "-c", str(cfg), "--model.on_nonfinite", "skip",
                 "--model.max_skipped_fraction", "0.9"]) == 0
    assert any("skipped 45 of 60 batches" in ln for ln in _lines(capsys))
    assert int(_ckpt(tmp_path / "run")["state_dict"]["skipped_batches"]) == 45


def test_nan_in_the_training_data_is_blamed_on_the_data(tmp_path, capsys):
    from domains.toy import ToyDomain

    (path,) = ToyDomain.prepare(tmp_path / "data", num_train=512, num_val=64, num_test=64)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["train"][::10, 1] = np.nan  # a few bad rows, as in a user's file
    np.savez(path, **arrays)
    cfg = write_config(tmp_path / "d.yaml", tmp_path / "run", max_steps=5)
    cfg.write_text(cfg.read_text().replace("      num_train: 2048\n",
                                           f"      data_path: {path}\n"))
    assert main(["fit", "-c", str(cfg)]) == 1
    line = _one_line(capsys)
    assert "holds NaN or Inf in its data (x0)" in line and "training data" in line
    assert "learning rate" not in line.replace("not the learning rate", "")
