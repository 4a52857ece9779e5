"""Wall time of ``import diffplat; diffplat.load(NAME)`` in a fresh process (issue #25).

Each run starts a new Python (so nothing is cached in the interpreter; the OS file cache is
warm after the first), imports diffplat, loads the shipped model and reports the seconds of
those two lines and whether ``lightning`` / ``pytorch_lightning`` ended up imported. The
median over ``--runs`` starts is printed (one thread: ``OMP_NUM_THREADS=1``).

    python benchmarks/load_time.py [--model qm9-small] [--runs 7]
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


def one_run(model: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    out = subprocess.run([sys.executable, "-c", CHILD, model], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qm9-small")
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args(argv)
    runs = [one_run(args.model) for _ in range(args.runs)]
    times = [r["seconds"] for r in runs]
    imported = sorted({n for r in runs for n in r["lightning"]})
    median = statistics.median(times)
    print(f"import diffplat; diffplat.load({args.model!r}): median {median:.2f} s "
          f"over {args.runs} fresh processes (min {min(times):.2f}, max {max(times):.2f}); "
          f"lightning imported: {', '.join(imported) if imported else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
