"""What a run shows (issue #23): the thread count it chooses, its validation metrics on the
console and beside the checkpoint, and no library noise or carriage returns in a log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffplat import progress, runtime
from diffplat.cli import main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("diffplat")
ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
ENV.pop("WANDB_SILENT", None)  # the command sets it itself; the test must not hide noise
ENV.pop(progress.ENV, None)

#: messages a command must not print (issue #23), and where each came from
NOISE = {
    "save_hyperparameters": "Lightning: an nn.Module attribute (building a model to sample)",
    "litlogger": "Lightning's tip to install litlogger",
    "anonymous setting": "wandb: WandbLogger passes anonymous=None",
    "in eval mode": "Lightning: the model summary and its eval-mode warning (the EMA copy)",
    "LeafSpec": "PyTorch's pytree deprecation, through Lightning",
}


def _toy_config(path: Path, root: Path, steps: int, val_every: int) -> Path:
    """The toy mixture, small, with the CLI's own defaults (wandb logger, progress, summary)."""
    path.write_text(textwrap.dedent(f"""\
        seed_everything: 0
        trainer:
          max_steps: {steps}
          max_epochs: -1
          accelerator: cpu
          devices: 1
          check_val_every_n_epoch: {val_every}
          log_every_n_steps: 5
          default_root_dir: {root}
        model:
          domain:
            class_path: domains.toy.ToyDomain
            init_args: {{num_train: 1024, num_val: 256, num_test: 256}}
          backbone:
            class_path: domains.toy.MLPBackbone
            init_args: {{hidden: 32, depth: 2}}
          target: v
          lr: 0.003
          warmup_steps: 5
          batch_size: 256
          sample_num: 128
          sample_steps: 6
        """))
    return path


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command with stdout and stderr to pipes (not terminals), as in a log file."""
    return subprocess.run([str(BIN), *args], cwd=ROOT, env=env or ENV, capture_output=True,
                          timeout=300)


def _noise(proc: subprocess.CompletedProcess) -> list[str]:
    text = (proc.stdout + proc.stderr).decode(errors="replace")
    found = [f"{k!r} ({why})" for k, why in NOISE.items() if k in text]
    returns = (proc.stdout + proc.stderr).count(b"\r")
    if returns:
        found.append(f"{returns} carriage returns")
    return found


# -- threads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("busy, expected", [(0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (2.0, 1),
                                            (3.7, 1)])
def test_threads_are_the_idle_cores_of_a_shared_machine(busy, expected):
    # 2 cores: each core another process keeps busy (half a core or more) is left to it
    assert runtime.choose_threads(2, busy, default=2, env={})[0] == expected


def test_threads_never_exceed_torchs_own_count_and_leave_a_core_per_worker():
    assert runtime.choose_threads(16, 0.0, default=8, env={})[0] == 8
    assert runtime.choose_threads(16, 3.2, default=16, env={})[0] == 13
    assert runtime.choose_threads(4, 0.0, default=4, env={}, workers=2)[0] == 2
    assert runtime.choose_threads(2, 0.0, default=2, env={}, workers=4)[0] == 1


def test_the_users_thread_choice_wins():
    assert runtime.choose_threads(2, 1.9, 2, env={"DIFFPLAT_THREADS": "2"})[0] == 2
    assert runtime.choose_threads(2, 0.0, 2, env={"DIFFPLAT_THREADS": "1"})[0] == 1
    # OMP_NUM_THREADS / MKL_NUM_THREADS: PyTorch already honours them, diffplat leaves them
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert runtime.choose_threads(2, 1.9, 2, env={name: "2"})[0] is None
    for bad in ("two", "0", "-1"):
        with pytest.raises(ValueError, match="DIFFPLAT_THREADS"):
            runtime.choose_threads(2, 0.0, 2, env={"DIFFPLAT_THREADS": bad})


def test_a_bad_thread_setting_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("DIFFPLAT_THREADS", "many")
    assert main(["evaluate", "--samples", "nowhere"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["diffplat evaluate: error: DIFFPLAT_THREADS must be a whole number >= 1, "
                   "got 'many'"]


def test_busy_cores_from_two_cpu_readings():
    # (busy, total) jiffies summed over 2 CPUs: 200 of 200 -> both busy; 50 of 200 -> half
    assert runtime.busy_from_stat((100, 1000), (300, 1200), 2) == pytest.approx(2.0)
    assert runtime.busy_from_stat((100, 1000), (150, 1200), 2) == pytest.approx(0.5)
    assert runtime.busy_from_stat((100, 1000), (100, 1000), 2) == 0.0


_APPLY = """
import json, torch
from diffplat import runtime
n, why = runtime.apply_threads(busy={busy})
first = torch.get_num_threads()
after_workers = runtime.reserve_for_workers(1)
print(json.dumps([n, first, after_workers, runtime.thread_note(), runtime.usable_cpus()]))
"""


def _apply(busy: float, **env: str) -> list:
    full = {k: v for k, v in ENV.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                       "DIFFPLAT_THREADS")}
    out = subprocess.run([sys.executable, "-c", _APPLY.format(busy=busy)], env={**full, **env},
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_apply_threads_sets_torch_and_respects_the_user():
    # torch's own count, read in a process where nobody set it
    default = int(subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env={k: v for k, v in ENV.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        capture_output=True, text=True, check=True).stdout)
    n, first, after_workers, note, cpus = _apply(busy=100.0)  # every core taken: one thread
    assert n == first == after_workers == 1
    if cpus > 1:  # fit's first line says why
        assert note.startswith(f"1 of {cpus} cores (100.0 busy with other processes, 1 "
                               "DataLoader workers)")
    n, first, after_workers, note, cpus = _apply(busy=0.0)
    assert n == first == min(default, cpus)
    assert after_workers == max(1, min(first, cpus - 1))  # a core left to the worker
    n, first, after_workers, note, _ = _apply(busy=100.0, DIFFPLAT_THREADS="2")
    assert (n, first, after_workers, note) == (2, 2, 2, "")  # the user's count, as it is
    n, first, after_workers, note, _ = _apply(busy=100.0, OMP_NUM_THREADS="2")
    assert (n, first, after_workers, note) == (None, 2, 2, "")  # left to PyTorch


def test_fit_records_the_chosen_thread_count(tmp_path):
    import torch

    cfg = _toy_config(tmp_path / "c.yaml", tmp_path / "run", steps=3, val_every=1000)
    env = {k: v for k, v in ENV.items() if k != "OMP_NUM_THREADS"}
    proc = _run(["fit", "-c", str(cfg), "--trainer.logger", "false"],
                {**env, "DIFFPLAT_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["diffplat"]["train_record"]["device"].endswith("(1 threads)")


# -- validation metrics ------------------------------------------------------------------------
def test_validation_metrics_reach_the_console_and_metrics_json(tmp_path):
    from diffplat.training.lightning import _run_cli

    # 1024 molecules of batch 256: 4 steps an epoch, validation every 2 epochs: steps 8, 16
    cfg = _toy_config(tmp_path / "c.yaml", tmp_path / "run", steps=16, val_every=2)
    proc = _run(["fit", "-c", str(cfg)])
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = proc.stdout.decode().splitlines()
    lines = [line for line in out if line.startswith("validation at step")]
    assert [int(re.search(r"step (\d+):", line).group(1)) for line in lines] == [8, 16]
    stored = json.loads((tmp_path / "run" / "checkpoints" / "metrics.json").read_text())
    assert stored["step"] == 16 and set(stored["metrics"]) >= {"val/loss", "val/mmd2", "val/w2"}
    shown = dict(pair.rsplit(" ", 1) for pair in lines[-1].split(": ", 1)[1].split(" | "))
    assert {f"val/{k}" for k in shown} == set(stored["metrics"])
    for key, value in shown.items():
        assert float(value) == pytest.approx(stored["metrics"][f"val/{key}"], rel=1e-3)
    assert out[-1].startswith("fit ended at step 16; last validation at step 16")
    assert "metrics.json" in out[-1]
    # the independent answer: validating the saved checkpoint gives the same numbers
    cli = _run_cli(["validate", "-c", str(cfg), "--ckpt_path", "last",
                    "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
    again = {k: float(v) for k, v in cli.trainer.callback_metrics.items()
             if k.startswith("val/")}
    assert set(again) == set(stored["metrics"])
    for key, value in again.items():
        assert stored["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_fit_says_when_no_validation_ran(tmp_path):
    cfg = _toy_config(tmp_path / "c.yaml", tmp_path / "run", steps=4, val_every=1000)
    proc = _run(["fit", "-c", str(cfg), "--trainer.logger", "false"])
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    last = proc.stdout.decode().splitlines()[-1]
    assert last.startswith("fit ended at step 4; no validation ran")
    assert "check_val_every_n_epoch is 1000" in last
    assert not (tmp_path / "run" / "checkpoints" / "metrics.json").exists()


def test_metrics_json_is_replaced_atomically(tmp_path, monkeypatch):
    report = {"step": 5, "epoch": 0, "metrics": {"val/loss": 1.5}}
    path = progress.write_metrics(tmp_path, report)
    assert json.loads(path.read_text())["metrics"] == {"val/loss": 1.5}
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the umask's permissions

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        progress.write_metrics(tmp_path, {**report, "step": 10})
    assert json.loads(path.read_text())["step"] == 5  # the previous report, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


# -- no noise ----------------------------------------------------------------------------------
def test_fit_sample_and_evaluate_print_no_library_noise_and_no_carriage_returns(tmp_path):
    cfg = _toy_config(tmp_path / "c.yaml", tmp_path / "run", steps=8, val_every=2)
    fit = _run(["fit", "-c", str(cfg)])  # the default wandb logger, offline
    assert fit.returncode == 0, fit.stderr.decode()[-2000:]
    assert _noise(fit) == []
    assert "step 8/8 (100%)" in fit.stdout.decode()  # progress as a plain line instead
    assert "model: MLPBackbone" in fit.stdout.decode()  # the summary, in one line
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    sample = _run(["sample", "--ckpt", ckpt, "--num", "64", "--out", str(tmp_path / "s")])
    assert sample.returncode == 0, sample.stderr.decode()[-2000:]
    assert _noise(sample) == []
    evaluate = _run(["evaluate", "--ckpt", ckpt, "--num", "64"])
    assert evaluate.returncode == 0, evaluate.stderr.decode()[-2000:]
    assert _noise(evaluate) == []


def test_a_forced_bar_still_draws_carriage_returns(tmp_path):
    # the check above can fail: with the bar forced on, carriage returns reach the pipe
    cfg = _toy_config(tmp_path / "c.yaml", tmp_path / "run", steps=4, val_every=1000)
    proc = _run(["fit", "-c", str(cfg), "--trainer.logger", "false"],
                {**ENV, progress.ENV: "1"})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert b"\r" in proc.stdout + proc.stderr


def test_progress_lines_in_a_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # a line after every step
    monkeypatch.delenv(progress.ENV, raising=False)  # capsys: stdout is not a terminal
    cfg = _toy_config(tmp_path / "c.yaml", tmp_path / "run", steps=6, val_every=1000)
    assert main(["fit", "-c", str(cfg), "--trainer.logger", "false"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split(" ", 2)[1] for line in lines] == [f"{k}/6" for k in range(1, 7)]
    assert all("steps/s" in line and "train/loss" in line for line in lines[1:])
    assert "left" in lines[1] and "left" not in lines[-1]


def test_progress_mode_follows_the_terminal_and_the_variable(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.mode(Stream(True)) == "bar"
    assert progress.mode(Stream(False)) == "lines"
    for value, expected in (("0", "off"), ("1", "bar"), ("lines", "lines")):
        monkeypatch.setenv(progress.ENV, value)
        assert progress.mode(Stream(False)) == expected
        assert progress.mode(Stream(True)) == expected
