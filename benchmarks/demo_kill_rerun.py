"""`make demo` killed at a moment of your choosing, then run again: what is lost, and do the
final metrics equal an uninterrupted run's?

    python benchmarks/demo_kill_rerun.py --kill-after 150 --signal KILL
    python benchmarks/demo_kill_rerun.py --kill-after 150 --signal TERM --reference runs/kill-ref

Runs ``make demo DEMO_DIR=<dir>`` three ways: uninterrupted (the reference; reused when
``--reference`` names a finished folder), then interrupted with SIGKILL or SIGTERM after
``--kill-after`` seconds (the whole process group, as a terminal's Ctrl-\\ or a scheduler's
kill would), then once more. It prints the step the interrupted run had saved, the steps
redone, the wall times, and both metrics tables with their difference (0 when resuming
is exact). Each run uses the same thread count, so the arithmetic is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def demo(folder: Path, kill_after: float | None = None, sig: int = signal.SIGKILL) -> float:
    """Run `make demo` into ``folder``; optionally interrupt it. Returns the wall time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(["make", "demo", f"DEMO_DIR={folder}"], cwd=ROOT,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, sig)
        proc.wait()
        return time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"make demo failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return time.perf_counter() - t0


def saved_step(folder: Path) -> int | None:
    last = folder / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    return int(torch.load(last, weights_only=True, map_location="cpu")["global_step"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kill-after", type=float, default=150.0,
                   help="seconds after the start of the interrupted make demo (default 150)")
    p.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    p.add_argument("--reference", default="runs/kill-ref",
                   help="folder of the uninterrupted run (reused when it holds metrics.json)")
    p.add_argument("--out", default="runs/kill-test", help="folder of the interrupted run")
    args = p.parse_args()
    ref, out = Path(args.reference), Path(args.out)
    if not (ROOT / ref / "metrics.json").is_file():
        print(f"uninterrupted make demo into {ref} ...", flush=True)
        print(f"  {demo(ref):.0f} s", flush=True)
    if (ROOT / out).exists():
        sys.exit(f"{out} exists; remove it or pass another --out")
    sig = getattr(signal, f"SIG{args.signal}")
    print(f"make demo into {out}, SIG{args.signal} after {args.kill_after:.0f} s ...",
          flush=True)
    first = demo(out, args.kill_after, sig)
    step = saved_step(ROOT / out)
    print(f"  interrupted at {first:.0f} s; last.ckpt holds step {step}", flush=True)
    second = demo(out)
    print(f"  rerun finished in {second:.0f} s", flush=True)
    a = json.loads((ROOT / ref / "metrics.json").read_text())["metrics"]
    b = json.loads((ROOT / out / "metrics.json").read_text())["metrics"]
    print(f"\n{'metric':<18} {'uninterrupted':>14} {'killed+rerun':>14} {'difference':>12}")
    for k in a:
        if isinstance(a[k], (int, float)):
            print(f"{k:<18} {a[k]:>14.6g} {b[k]:>14.6g} {b[k] - a[k]:>12.3g}")
    same = all(a[k] == b[k] for k in a)
    print(f"\nidentical metrics: {same}; the interrupted run had saved step {step}")


if __name__ == "__main__":
    main()
