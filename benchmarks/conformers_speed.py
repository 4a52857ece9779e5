"""Conformers per second: the graph-conditioned model against RDKit ETKDG, same molecules.

    python benchmarks/conformers_speed.py --ckpt runs/conformers-qm9-tiny/checkpoints/last.ckpt
    python benchmarks/conformers_speed.py --hidden 256 --layers 9 --device cuda   # untrained,
                                                      # EDM-sized: speed does not need weights

Takes the first ``--num-mols`` QM9 test molecules in the evaluation order of ``diffplat
evaluate conformers`` (needs ``data/qm9/qm9.npz``), generates ``-n`` conformers of each with
the model (one sampler call per batch of at most ``--max-atoms`` atoms, at ``--steps``
sampler steps) and with ETKDGv3 (one ``EmbedMultipleConfs`` per molecule, one thread), and
prints the wall time and conformers/s of both. A warm-up batch runs first on the model.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def build(args, device):
    from diffplat.store import build_model, load_model

    if args.ckpt:
        return load_model(args.ckpt, map_location=device).to(device)
    cfg = {
        "domain": {"class_path": "domains.molecules.conformers.domain.ConformerDomain",
                   "init_args": {"data_path": args.data, "max_train": 100,
                                 "max_eval": max(args.num_mols, 100)}},
        "backbone": {"class_path": "domains.molecules.conformers.backbone.ConformerEGNN",
                     "init_args": {"node_dim": 22, "edge_dim": 11, "hidden": args.hidden,
                                   "layers": args.layers}},
        "schedule": "polynomial", "target": "eps", "sampler": "dpmpp_2m",
        "sample_steps": args.steps,
    }
    return build_model(cfg).to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", help="a conformer checkpoint (default: an untrained model)")
    p.add_argument("--data", default="data/qm9/qm9.npz")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--num-mols", type=int, default=50)
    p.add_argument("-n", type=int, default=10, help="conformers per molecule")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--max-atoms", type=int, default=20000)
    p.add_argument("--mmff", action="store_true", help="also relax ETKDG with MMFF94")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-rdkit", action="store_true")
    args = p.parse_args()
    from diffplat.runtime import flush_subnormals

    flush_subnormals()
    from domains.molecules.conformers.baseline import rdkit_conformers
    from domains.molecules.conformers.sample import model_conformers

    module = build(args, args.device)
    domain = module.domain
    graphs = [domain.graphs("test")[i] for i in domain.order("test")[: args.num_mols]]
    total = len(graphs) * args.n
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else ""
    params = sum(p.numel() for p in module.backbone.parameters() if p.requires_grad)
    print(f"device {args.device} {gpu} | cpu {cpu}, torch threads {torch.get_num_threads()}"
          f" | {len(graphs)} QM9 test molecules x {args.n} conformers"
          f" | model {params:,} trained parameters,"
          f" {args.sampler} {args.steps} steps")
    model_conformers(module, graphs[:2], 1, args.sampler, 2, 0, args.max_atoms, args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    model_conformers(module, graphs, args.n, args.sampler, args.steps, 0, args.max_atoms,
                     args.device)
    sync()
    dt = time.perf_counter() - t0
    print(f"model:  {total} conformers in {dt:.2f} s = {total / dt:.1f} conformers/s "
          f"({1000 * dt / total:.2f} ms per conformer)")
    if args.skip_rdkit:
        return
    t0 = time.perf_counter()
    made = sum(len(rdkit_conformers(g.mol, args.n, args.mmff, seed=0)) for g in graphs)
    dt = time.perf_counter() - t0
    print(f"ETKDG{'+MMFF' if args.mmff else ''}: {made} conformers in {dt:.2f} s = "
          f"{made / dt:.1f} conformers/s ({1000 * dt / max(made, 1):.2f} ms per conformer)")


if __name__ == "__main__":
    main()
