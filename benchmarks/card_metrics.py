"""A model card's figures over several sampling seeds, each with a 95% interval.

Runs ``diffplat evaluate`` once per seed (the same model, sampler and count; only ``--seed``
changes) and writes one metrics JSON for ``diffplat export --metrics``: for every scalar
metric the mean over the seeds, each seed's value (``<metric>_seed<S>``) and a 95% interval
for the mean (``<metric>_ci_low`` / ``<metric>_ci_high``): Student's t over the seeds' values,
t_{0.975, k-1} * sd / sqrt(k) (k seeds), which counts the seed-to-seed spread whatever its
source (the molecules drawn, the sampler's noise). With one seed no interval is written.
The sampling settings of the first seed's run (sampler, steps, spacing, options) are kept at
the top level, as ``diffplat evaluate --json`` writes them, so the card's ``measured_with``
repeats them.

    python benchmarks/card_metrics.py --model qm9-small --seeds 0 1 2 --num 1000 \\
        --json runs/qm9-small-card.json -- --sampler euler_anneal --steps 50 \\
        --spacing arcsin -o level_min=0.001
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# two-sided 95% quantiles of Student's t for 1..9 degrees of freedom (then the normal's)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262}


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the t interval for the mean of ``values`` (two or more)."""
    k = len(values)
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    half = T975.get(k - 1, 1.96) * sd / math.sqrt(k)
    return mean, mean - half, mean + half


def combine(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One metrics JSON from ``evaluate --json`` outputs keyed by seed."""
    seeds = sorted(runs)
    first = runs[seeds[0]]
    metrics: dict[str, Any] = {}
    for key, value in first["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        values = [float(runs[s]["metrics"][key]) for s in seeds]
        if len(seeds) == 1:
            metrics[key] = values[0]
            continue
        mean, low, high = interval(values)
        metrics[key] = mean
        metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = low, high
        for s, v in zip(seeds, values):
            metrics[f"{key}_seed{s}"] = v
    out = {k: v for k, v in first.items() if k not in ("metrics", "seed", "seconds")}
    out.update(metrics=metrics, seeds=seeds)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="arguments after -- go to every `diffplat evaluate`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a shipped model's name or an export folder")
    src.add_argument("--ckpt", help="a checkpoint")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--json", required=True, help="the combined metrics JSON")
    args = p.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        p.error("--seeds: each seed once")
    from diffplat.cli import main as cli

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            path = Path(tmp) / f"seed{seed}.json"
            source = ["--model", args.model] if args.model else ["--ckpt", args.ckpt]
            rc = cli(["evaluate", *source, "--num", str(args.num), "--seed", str(seed),
                      "--no-progress", "--json", str(path), *extra])
            if rc != 0:
                return rc
            runs[seed] = json.loads(path.read_text())
    result = combine(runs)
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print(f"seeds {args.seeds}, {args.num} samples each:")
    for key, value in result["metrics"].items():
        if f"{key}_ci_low" in result["metrics"]:
            m = result["metrics"]
            print(f"  {key:<20} {value:.4f}  95% CI [{m[key + '_ci_low']:.4f}, "
                  f"{m[key + '_ci_high']:.4f}]  seeds "
                  + " ".join(f"{m[f'{key}_seed{s}']:.4f}" for s in args.seeds))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
