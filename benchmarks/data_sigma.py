"""The std of what a domain's model diffuses: sigma_data for the edm target (issue #24).

    python benchmarks/data_sigma.py configs/shapes/procedural-tiny.yaml [--max-items 2000]

Builds the config's domain, draws training examples exactly as training does (the
domain's ``train_dataset``, ``collate`` and ``unpack``, so the audio gain, the shape
normalisation and the molecules' centring are applied), and prints, per degree of freedom
of the domain's noise space (space.sum / space.dof: a molecule's 3 (N - 1) free
coordinates, a clip's samples, a cloud's 3 x 256 coordinates):

  rms    sqrt(E[x0^2]): what EDM's c_skip = d^2 / (sigma^2 + d^2) assumes as d^2 (the
         optimal skip weight for data of second moment d^2 about zero, the prior's mean)
  mean   the mean coordinate, and std = sqrt(rms^2 - mean^2) (equal to rms for centred
         data)
  rms per coordinate   sqrt(sum x0^2 / coordinates): smaller than rms by sqrt((n - 1) / n)
         where the noise space removes the centre of mass (n atoms), equal otherwise

``--max-items`` examples at most, evenly spaced over the training split (all if fewer).
``--json`` prints one JSON object instead of the table. Measured figures are in the header
of configs/compare/cross-domain-ve.yaml.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def measure(config: Path | dict, max_items: int = 2000, batch_size: int = 64,
            data_path: str | None = None) -> dict:
    """{"rms", "mean", "std", "rms_per_coordinate", "items", "dof", "coords"} of the
    config's training data (rms, mean and std per degree of freedom of its noise space)."""
    from diffplat.plugins import instantiate_domain

    cfg = config if isinstance(config, dict) else yaml.safe_load(Path(config).read_text())
    spec = json.loads(json.dumps(cfg["model"]["domain"]))
    if data_path is not None:  # the same domain on another copy of its data (tests)
        spec.setdefault("init_args", {})["data_path"] = str(data_path)
    domain = instantiate_domain(spec)
    domain.setup("fit")
    data = domain.train_dataset()
    n = len(data)
    step = max(1, math.ceil(n / max_items)) if max_items else 1
    index = list(range(0, n, step))
    torch.manual_seed(0)  # any augmentation the dataset draws is then reproducible
    sq = lin = dof_total = coords = 0.0
    for start in range(0, len(index), batch_size):
        items = [data[i] for i in index[start:start + batch_size]]
        x0, _, space = domain.unpack(domain.collate(items))
        x0 = x0.double()
        dof = space.dof(x0).double()
        sq += float(space.sum(x0 ** 2).sum())
        # the mean coordinate over the free degrees of freedom: sum(x0) through the same
        # reduction (masked atoms and padding contribute zero)
        lin += float(space.sum(x0).sum())
        dof_total += float(dof.sum())
        coords += float(space.sum(torch.ones_like(x0)).sum())
    rms = math.sqrt(sq / dof_total)
    mean = lin / dof_total
    name = "(a config dict)" if isinstance(config, dict) else str(config)
    return {"config": name, "items": len(index), "dof": dof_total, "rms": rms,
            "mean": mean, "std": math.sqrt(max(rms ** 2 - mean ** 2, 0.0)),
            "coords": coords, "rms_per_coordinate": math.sqrt(sq / coords)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+", type=Path, help="training configs")
    p.add_argument("--max-items", type=int, default=2000,
                   help="examples at most, evenly spaced (0: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per config")
    args = p.parse_args(argv)
    for config in args.configs:
        t0 = time.perf_counter()
        r = measure(config, args.max_items)
        r["seconds"] = round(time.perf_counter() - t0, 1)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{config}: rms {r['rms']:.4f}  mean {r['mean']:+.4f}  std {r['std']:.4f}"
                  f"  rms per coordinate {r['rms_per_coordinate']:.4f}"
                  f"  ({r['items']} examples, {r['dof']:.0f} degrees of freedom, "
                  f"{r['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
