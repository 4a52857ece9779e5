"""Run a comparison grid: one worker process per training cell, resumable, in parallel.

Each training cell lives in ``OUT/cells/<name>/`` with its config, its run (checkpoints),
``train.json``, ``loss_curve.json`` and one ``sample-<sampler>-<nfe>.json`` per sampling
cell. A rerun skips every cell whose results are on disk (``retry_failed`` reruns the failed
ones), so an interrupted comparison picks up where it stopped. ``jobs`` workers run at once;
with ``devices`` each worker gets one GPU through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from diffplat.compare.grid import Grid, TrainCell
from diffplat.compare.results import read_result
from diffplat.compare.worker import TRAIN_FILE


def cell_status(cell_dir: Path, files: list[str]) -> tuple[int, int]:
    """(results on disk, failed among them) for a training cell's sampling files."""
    done = failed = 0
    for f in files:
        result = read_result(cell_dir / f)
        if result is not None:
            done += 1
            failed += result.get("status") != "ok"
    return done, failed


@dataclass
class _Job:
    cell: TrainCell
    dir: Path
    proc: subprocess.Popen
    log: TextIO
    slot: int
    started: float


class Runner:
    """Args:
        grid: the validated grid (``load_grid``).
        jobs: workers at once (default: one per device, or 1 on CPU).
        devices: GPU indices, one worker per GPU at a time.
        retry_failed: rerun the cells recorded as failed.
        stream: where progress lines go.
    """

    def __init__(self, grid: Grid, jobs: int | None = None, devices: list[str] | None = None,
                 retry_failed: bool = False, stream: TextIO | None = None):
        self.grid, self.devices = grid, devices or []
        self.jobs = jobs or max(1, len(self.devices))
        self.retry_failed, self.stream = retry_failed, stream
        self.cells_dir = grid.out / "cells"
        self.files = {id(cell): [s.filename for s in grid.sample_cells if s.train is cell]
                      for cell in grid.train_cells}  # each model's sampling result files
        self._ok: set[Path] = set()  # results known to be final (ok), not re-read while polling

    def _spec(self, cell: TrainCell) -> dict:
        d = self.grid.domains[cell.domain]
        cfg = json.loads(json.dumps(cell.config))
        trainer = cfg.setdefault("trainer", {})
        trainer["default_root_dir"] = str(self.cells_dir / cell.dirname / "run")
        trainer.setdefault("enable_progress_bar", False)
        trainer.setdefault("logger", False)
        cells = [{"sampler": s.sampler, "nfe": s.nfe, "steps": s.steps, "file": s.filename}
                 for s in self.grid.sample_cells if s.train is cell]
        return {"key": cell.key, "config": cfg, "checkpoint": cell.checkpoint, "cells": cells,
                "num_samples": d.num_samples, "metric": d.metric, "seed": self.grid.seed,
                "sampling": d.sampling, "loss_curve_batches": d.loss_curve_batches,
                "tune": d.tune}

    def pending(self) -> list[TrainCell]:
        out = []
        for cell in self.grid.train_cells:
            cell_dir = self.cells_dir / cell.dirname
            files = self.files[id(cell)]
            train = read_result(cell_dir / TRAIN_FILE)
            done, failed = cell_status(cell_dir, files)
            complete = train is not None and (train.get("status") != "ok" or done == len(files))
            if not complete or (self.retry_failed and (failed or train.get("status") != "ok")):
                out.append(cell)
        return out

    def _say(self, msg: str) -> None:
        print(f"[compare] {msg}", file=self.stream or sys.stdout, flush=True)

    def _start(self, cell: TrainCell, slot: int) -> _Job:
        cell_dir = self.cells_dir / cell.dirname
        cell_dir.mkdir(parents=True, exist_ok=True)
        spec = self._spec(cell)
        if self.retry_failed:
            for f in [TRAIN_FILE] + [c["file"] for c in spec["cells"]]:
                result = read_result(cell_dir / f)
                if result is not None and result.get("status") != "ok":
                    (cell_dir / f).unlink()
        (cell_dir / "cell.json").write_text(json.dumps(spec, indent=2, default=str))
        env = dict(os.environ)
        if self.devices:
            env["CUDA_VISIBLE_DEVICES"] = self.devices[slot % len(self.devices)]
        elif self.jobs > 1 and "OMP_NUM_THREADS" not in env:
            # CPU workers side by side: split the cores instead of letting every worker's
            # OpenMP pool spin on all of them (oversubscribed pools run many times slower)
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        log = open(cell_dir / "worker.log", "a")  # noqa: SIM115 - closed when the job ends
        proc = subprocess.Popen([sys.executable, "-m", "diffplat.compare.worker", str(cell_dir)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        return _Job(cell, cell_dir, proc, log, slot, time.perf_counter())

    def _finish(self, job: _Job, code: int) -> None:
        job.log.close()
        if code != 0 and read_result(job.dir / TRAIN_FILE) is None:
            # the worker died before it could write anything (killed, out of memory)
            tail = (job.dir / "worker.log").read_text(errors="replace").strip().splitlines()
            reason = f"worker exited with status {code}" + (f": {tail[-1][:300]}" if tail
                                                              else "")
            (job.dir / TRAIN_FILE).write_text(json.dumps({"status": "failed",
                                                          "reason": reason}))

    def prepare_data(self) -> None:
        """Run each domain entry's ``prepare`` commands (datasets, a metric's classifier)
        whose output path is missing."""
        import shlex

        for spec in self.grid.domains.values():
            for step in spec.prepare:
                if Path(step["path"]).exists():
                    continue
                self._say(f"{spec.name}: {step['path']} is missing; running "
                          f"`diffplat {step['run']}`")
                code = subprocess.run([sys.executable, "-m", "diffplat.cli",
                                       *shlex.split(step["run"])]).returncode
                if code != 0 or not Path(step["path"]).exists():
                    raise RuntimeError(f"`diffplat {step['run']}` (for {spec.name}) failed "
                                       f"with status {code} or did not write {step['path']}")

    def run(self) -> None:
        self.prepare_data()
        self.grid.out.mkdir(parents=True, exist_ok=True)
        (self.grid.out / "grid.json").write_text(json.dumps(self.grid.to_json(), indent=2))
        todo = self.pending()
        total = len(self.grid.sample_cells)
        skipped = len(self.grid.train_cells) - len(todo)
        self._say(f"{len(self.grid.train_cells)} models, {total} sampling cells; "
                  f"{skipped} models already done, {len(todo)} to run with {self.jobs} "
                  f"worker(s) in {self.grid.out}")
        queue, running, finished, t0 = list(todo), [], 0, time.perf_counter()
        last, last_time = "", 0.0
        while queue or running:
            free = [s for s in range(self.jobs) if s not in {j.slot for j in running}]
            while queue and free:
                running.append(self._start(queue.pop(0), free.pop(0)))
            time.sleep(0.5)
            for job in list(running):
                code = job.proc.poll()
                if code is not None:
                    self._finish(job, code)
                    running.remove(job)
                    finished += 1
            state, line = self._progress(todo, running, finished, time.perf_counter() - t0)
            now = time.perf_counter()
            if state != last or now - last_time > 60:  # on every change, else once a minute
                self._say(line)
                last, last_time = state, now

    def _progress(self, todo, running, finished, elapsed) -> str:
        done = failed = 0
        for cell in self.grid.train_cells:
            cell_dir = self.cells_dir / cell.dirname
            for name in self.files[id(cell)]:
                path = cell_dir / name
                if path in self._ok:
                    done += 1
                    continue
                result = read_result(path)
                if result is not None:
                    done += 1
                    if result.get("status") == "ok":
                        self._ok.add(path)
                    else:
                        failed += 1
        total = len(self.grid.sample_cells)
        eta = ""
        if finished and len(todo) > finished:
            left = elapsed / finished * (len(todo) - finished)  # wall time per model so far
            eta = f", about {_fmt(left)} left"
        now = ", ".join(j.cell.key for j in running) or "-"
        state = (done, failed, finished, now)
        return state, (f"cell {done} of {total} done ({failed} failed); models "
                       f"{finished}/{len(todo)} this run; running: {now}; elapsed "
                       f"{_fmt(elapsed)}{eta}")


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"
