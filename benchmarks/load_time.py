"""Wall time of ``import diffplat; diffplat.load(NAME)`` in a fresh process (issue #25).

Each run starts a new Python (so nothing is cached in the interpreter; the OS file cache is
warm after the first), imports diffplat, loads the shipped model and reports the seconds of
those two lines and whether ``lightning`` / ``pytorch_lightning`` ended up imported. The
median over ``--runs`` starts is printed (one thread: ``OMP_NUM_THREADS=1``).

    python benchmarks/load_time.py [--model qm9-small] [--runs 7] [--baseline DIR]

``--baseline DIR`` (another checkout, e.g. ``git worktree add /tmp/base <commit>``) times
that checkout too, alternating with this one start by start, so that both figures come
from the same run on an equally busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import diffplat
diffplat.load(sys.argv[1])
seconds = time.perf_counter() - t0
names = ("lightning", "pytorch_lightning", "lightning_fabric")
print(json.dumps({"seconds": seconds, "lightning": [n for n in names if n in sys.modules]}))
"""


def one_run(model: str, root: Path = ROOT) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", CHILD, model], cwd=root, env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(label: str, model: str, runs: list[dict]) -> str:
    times = [r["seconds"] for r in runs]
    imported = sorted({n for r in runs for n in r["lightning"]})
    return (f"{label}import diffplat; diffplat.load({model!r}): median "
            f"{statistics.median(times):.2f} s over {len(runs)} fresh processes (min "
            f"{min(times):.2f}, max {max(times):.2f}); lightning imported: "
            f"{', '.join(imported) if imported else 'no'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qm9-small")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--baseline", type=Path, default=None,
                   help="another checkout to time alternately with this one")
    args = p.parse_args(argv)
    runs, base = [], []
    for _ in range(args.runs):
        if args.baseline is not None:
            base.append(one_run(args.model, args.baseline.resolve()))
        runs.append(one_run(args.model))
    if base:
        print(summary(f"baseline {args.baseline}: ", args.model, base))
    print(summary("this checkout: " if base else "", args.model, runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
