"""Local geometry of generated conformers against the QM9 DFT references: mean absolute error
of bond lengths (1-2 distances) and of 1-3 distances (angles), model and ETKDG side by side.

    python benchmarks/conformers_local_errors.py --ckpt CKPT --num-mols 40 -n 2

Same molecules as ``diffplat evaluate conformers`` (the first ``--num-mols`` of the test
split in its fixed order); molecules ETKDG cannot embed are left out of its figures only.
"""

from __future__ import annotations

import argparse

import numpy as np


def distance_errors(graph, confs: list[np.ndarray], hops: int) -> list[float]:
    """|d_gen - d_ref| of every atom pair ``hops`` bonds apart, over the conformers."""
    ref = graph.conformers[0]
    ii, jj = np.nonzero(np.triu(graph.hops == hops))
    d_ref = np.linalg.norm(ref[ii] - ref[jj], axis=1)
    return [e for c in confs for e in np.abs(np.linalg.norm(c[ii] - c[jj], axis=1) - d_ref)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--num-mols", type=int, default=40)
    p.add_argument("-n", type=int, default=2, help="conformers per molecule")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args()
    from diffplat.runtime import flush_subnormals

    flush_subnormals()
    from diffplat.store import load_model
    from domains.molecules.conformers.baseline import rdkit_conformers
    from domains.molecules.conformers.sample import model_conformers

    module = load_model(args.ckpt)
    domain = module.domain
    graphs = [domain.graphs("test")[i] for i in domain.order("test")[: args.num_mols]]
    rows = {"model": model_conformers(module, graphs, args.n, steps=args.steps),
            "ETKDGv3": [rdkit_conformers(g.mol, args.n) for g in graphs]}
    print(f"{len(graphs)} QM9 test molecules, {args.n} conformers each; mean |error| in A")
    for name, confs in rows.items():
        bonds = [e for g, c in zip(graphs, confs) for e in distance_errors(g, c, 1)]
        angles = [e for g, c in zip(graphs, confs) for e in distance_errors(g, c, 2)]
        print(f"{name:8s} bond lengths {np.mean(bonds):.3f}  1-3 distances {np.mean(angles):.3f}"
              f"  ({sum(1 for c in confs if c)} molecules)")


if __name__ == "__main__":
    main()
