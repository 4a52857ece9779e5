"""Score one trained molecule model with several samplers (same checkpoint, same seed).

    python benchmarks/qm9_sampler_sweep.py --ckpt runs/qm9-tiny/checkpoints/last.ckpt --num 200

Prints EDM's metrics per sampler, steps and spacing, and the sampling time. The table in
docs/molecules.md comes from this script.
"""

from __future__ import annotations

import argparse
import time

import torch

CELLS = [("dpmpp_2m", 50, {}), ("ddpm", 100, {"spacing": "uniform_t"}),
         ("dpmpp_2m_sde", 100, {"spacing": "uniform_t"}), ("dpmpp_2m_sde", 100, {}),
         ("dpmpp_2m_sde", 200, {})]


def main() -> None:
    from diffplat.store import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from diffplat.runtime import flush_subnormals

    flush_subnormals()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_model(args.ckpt, map_location=device).to(device)
    module.domain.setup("test")
    print(f"{args.ckpt}: {args.num} molecules, seed {args.seed}, {device}")
    for name, steps, options in CELLS:
        t0 = time.perf_counter()
        samples, stats = module.generate(args.num, sampler=name, steps=steps, seed=args.seed,
                                         sampler_options=options)
        seconds = time.perf_counter() - t0
        m = module.domain.metrics(samples)
        print(f"{name:<13} {options.get('spacing', 'karras'):<9} NFE {stats['nfe']:>4}  "
              f"atom {100 * m['atom_stability']:5.1f}%  mol {100 * m['mol_stability']:4.1f}%  "
              f"valid {100 * m['validity']:5.1f}%  V*U {100 * m['valid_and_unique']:5.1f}%  "
              f"{seconds:5.1f} s", flush=True)


if __name__ == "__main__":
    main()
