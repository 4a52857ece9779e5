"""Runs in separate processes: kill -9 and resume, DDP on two CPU processes, wandb offline."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import write_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _diffplat(*args, **kw):
    return subprocess.run([sys.executable, "-m", "diffplat.cli", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, **kw)


def test_kill_9_then_resume_loses_no_checkpointed_step(tmp_path):
    cfg = write_config(tmp_path / "k.yaml", tmp_path / "run", max_steps=400, ckpt_every=1)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "diffplat.cli", "fit", "-c", str(cfg)],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not last.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert last.exists(), "no checkpoint within 2 minutes"
        time.sleep(1.5)  # let it write many more, then kill at an arbitrary moment
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = torch.load(last, weights_only=True)  # never a truncated file
    step = ckpt["global_step"]
    assert 0 < step < 400
    res = _diffplat("fit", "-c", str(cfg), "--ckpt_path", "last", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"Restored all states from the checkpoint at {last}" in res.stderr + res.stdout
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == 400
    # the resumed run started where the checkpoint stood: the EMA counted every step once
    assert int(final["state_dict"]["ema.num_updates"]) == 400


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_keeps_ranks_identical(tmp_path):
    cfg = write_config(tmp_path / "d.yaml", tmp_path / "run", max_steps=12, ckpt_every=6)
    out = tmp_path / "weights"
    res = _diffplat("fit", "-c", str(cfg), "--trainer.strategy", "ddp",
                    "--trainer.devices", "2", "--trainer.accelerator", "cpu",
                    "--trainer.callbacks+=tests.helpers.DumpWeights",
                    f"--trainer.callbacks.out_dir={out}", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["step"] == ranks[1]["step"] == 12
    assert ranks[0]["sha256"] == ranks[1]["sha256"]


def test_wandb_offline_logs_metrics_buckets_and_images(tmp_path):
    cfg = write_config(tmp_path / "w.yaml", tmp_path / "run", max_steps=32, ckpt_every=32)
    text = cfg.read_text().replace("  logger: false\n", "").replace(
        "check_val_every_n_epoch: 1000", "check_val_every_n_epoch: 1")
    cfg.write_text(text)
    res = _diffplat("fit", "-c", str(cfg), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    images = list((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert images, "validation previews should be logged as wandb images"


def test_csv_logger_records_loss_per_log_snr_bucket(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "run", max_steps=32, ckpt_every=32)
    cfg.write_text(cfg.read_text().replace(
        "  logger: false\n",
        "  logger:\n    class_path: pytorch_lightning.loggers.CSVLogger\n"
        f"    init_args: {{save_dir: {tmp_path / 'csv'}}}\n"))
    res = _diffplat("fit", "-c", str(cfg), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(next((tmp_path / "csv").rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    bucket_cols = [k for k in rows[0] if k.startswith("train/loss_by_log_snr/")]
    assert len(bucket_cols) >= 6
    values = [float(r[k]) for r in rows for k in bucket_cols if r[k]]
    assert values and all(v > 0 for v in values)
