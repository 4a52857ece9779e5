"""Speed of the PointFlow-protocol metrics, accuracy of the EMD approximation, and sampling
throughput of the shapes models.

    python benchmarks/shapes_metrics_speed.py                      # 400 vs 400 clouds, 2048 pts
    python benchmarks/shapes_metrics_speed.py --classes mug --skip-emd --skip-sampling
    python benchmarks/shapes_metrics_speed.py --num 100 --baseline kdtree --skip-emd
    python benchmarks/shapes_metrics_speed.py --skip-metrics --sample-num 16

Clouds are sampled from procedural meshes (domains/shapes/procedural.py), "generated" and
"reference" from different seeds, all six classes in turn or only ``--classes``. Prints: the
time of MMD/COV/1-NNA with Chamfer by the default method of the device (pruned exact search
on a CPU, batched brute force on a GPU) and, with ``--baseline``, by the full matrices
side by side (the values must agree); the EMD of Sinkhorn and of subsampling against the
exact assignment on a few pairs; the exact-EMD set metrics by nearest-neighbour search
against the full matrices (``--emd-sets``); and clouds/s of sampling with the backbone of
each config (random weights: the speed does not depend on them).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from domains.shapes.meshes import sample_surface
from domains.shapes.metrics import emd_exact, emd_sinkhorn, set_metrics, subsample
from domains.shapes.procedural import CLASSES, build


def procedural_clouds(num: int, points: int, seed: int,
                      classes: tuple[str, ...] = CLASSES) -> torch.Tensor:
    out = []
    for i in range(num):
        mesh = build(classes[i % len(classes)], seed, i)
        pts = sample_surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), points,
                             np.random.default_rng([seed, i]))
        out.append(pts)
    x = torch.as_tensor(np.stack(out), dtype=torch.float32)
    return (x - x.reshape(-1, 3).mean(0)) / x.reshape(-1).std()


def bench_metrics(args, device) -> None:
    from domains.shapes.metrics import pruned_chamfer_metrics

    classes = tuple(args.classes or CLASSES)
    gen = procedural_clouds(args.num, args.points, seed=1, classes=classes)
    ref = procedural_clouds(args.num, args.points, seed=2, classes=classes)
    what = (f"{args.num} vs {args.num} clouds of {args.points} points "
            f"({'/'.join(classes) if args.classes else 'six classes'})")
    pairs = args.num * args.num + args.num * (args.num - 1)     # S x R, S x S, R x R
    if device.type == "cuda":
        set_metrics(gen[:8], ref[:8], emd=None, device=device)   # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = set_metrics(gen, ref, emd=None, device=device)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"MMD/COV/1-NNA-CD, brute force on {device}, {what}: {dt:.1f} s")
    else:
        t0 = time.perf_counter()
        out, index = pruned_chamfer_metrics(gen, ref)
        dt = time.perf_counter() - t0
        print(f"MMD/COV/1-NNA-CD, pruned exact search on the CPU, {what}: {dt:.1f} s; "
              f"{index.exact_pairs} of {pairs} distinct "
              f"pairs computed in full")
    print("  " + ", ".join(f"{k} {v:.6g}" for k, v in out.items()))
    if args.baseline:
        t0 = time.perf_counter()
        base = set_metrics(gen, ref, emd=None, device=device, chamfer=args.baseline)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt_base = time.perf_counter() - t0
        print(f"  baseline, full matrices by {args.baseline}: {dt_base:.1f} s "
              f"({dt_base / dt:.1f}x the time)")
        print("  " + ", ".join(f"{k} {v:.6g}" for k, v in base.items()))
        same = all(base[k] == out[k] for k in ("cov_cd", "1nna_cd")) and abs(
            base["mmd_cd"] - out["mmd_cd"]) <= 1e-5 * base["mmd_cd"]
        print(f"  values agree: {same}")


def bench_emd(args) -> None:
    gen = procedural_clouds(args.emd_pairs, args.emd_points, seed=3).double()
    ref = procedural_clouds(args.emd_pairs, args.emd_points, seed=4).double()
    t0 = time.perf_counter()
    exact = np.array([emd_exact(gen[i], ref[i]) for i in range(args.emd_pairs)])
    t_exact = (time.perf_counter() - t0) / args.emd_pairs
    for iters in args.sinkhorn_iters:
        t0 = time.perf_counter()
        approx = emd_sinkhorn(gen.float(), ref.float(), iters=iters).double().numpy()
        t_approx = (time.perf_counter() - t0) / args.emd_pairs
        rel = (approx - exact) / exact
        print(f"EMD Sinkhorn (epsilon 1e-3, {iters} iterations) vs exact on {args.emd_pairs} "
              f"pairs of {args.emd_points} points: relative error mean {rel.mean():+.2%}, "
              f"max {np.abs(rel).max():.2%}; {t_approx:.2f} s/pair vs exact {t_exact:.2f} "
              "s/pair (CPU)")
    for points in args.subsample_points:
        t0 = time.perf_counter()
        sg, sr = subsample(gen, points), subsample(ref, points)
        approx = np.array([emd_exact(sg[i], sr[i]) for i in range(args.emd_pairs)])
        t_approx = (time.perf_counter() - t0) / args.emd_pairs
        rel = (approx - exact) / exact
        print(f"EMD subsample ({points} points, exact assignment) vs exact on "
              f"{args.emd_pairs} pairs of {args.emd_points} points: relative error mean "
              f"{rel.mean():+.2%}, max {np.abs(rel).max():.2%}; {t_approx:.3f} s/pair")
    print(f"  exact EMD values: mean {exact.mean():.4f}")


def bench_emd_sets(args) -> None:
    gen = procedural_clouds(args.emd_sets, args.emd_set_points, seed=1)
    ref = procedural_clouds(args.emd_sets, args.emd_set_points, seed=2)
    times, values = {}, {}
    for search in (True, False):
        t0 = time.perf_counter()
        out = set_metrics(gen, ref, emd="exact", emd_search=search, chamfer="pruned")
        times[search] = time.perf_counter() - t0
        values[search] = {k: out[k] for k in ("mmd_emd", "cov_emd", "1nna_emd")}
    print(f"MMD/COV/1-NNA-CD and -EMD (exact), {args.emd_sets} vs {args.emd_sets} clouds of "
          f"{args.emd_set_points} points on the CPU: nearest-neighbour search "
          f"{times[True]:.1f} s, full EMD matrices {times[False]:.1f} s "
          f"({times[False] / times[True]:.1f}x); values agree: {values[True] == values[False]}")
    print("  " + ", ".join(f"{k} {v:.6g}" for k, v in values[True].items()))


def bench_sampling(args, device) -> None:
    from diffplat import samplers, schedules
    from diffplat.noise import GaussianNoise
    from diffplat.targets import Denoiser
    from domains.shapes import PointTransformer

    for cfg_path in args.configs:
        cfg = yaml.safe_load(Path(cfg_path).read_text())["model"]
        init = cfg["backbone"]["init_args"]
        points = cfg["domain"]["init_args"]["num_points"]
        model = PointTransformer(**init).to(device).eval()
        schedule = schedules.get(cfg.get("schedule", "cosine"))
        denoiser = Denoiser(model, schedule, cfg.get("target", "eps"))
        steps, name = args.steps or cfg.get("sample_steps", 18), cfg.get("sampler", "heun")
        labels = torch.zeros(args.sample_num, dtype=torch.long, device=device)

        def denoise(x, t, denoiser=denoiser, labels=labels):
            return denoiser.predict(x, t, noise_space=GaussianNoise(),
                                    labels=labels[: len(x)])[1]

        noise = torch.randn(args.sample_num, points, 3, device=device)
        with torch.no_grad():
            samplers.get(name)(denoise, noise[:2], schedule, 2, noise_space=GaussianNoise())
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            samplers.get(name)(denoise, noise, schedule, steps, noise_space=GaussianNoise())
            if device.type == "cuda":
                torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"sampling {cfg_path}: {args.sample_num} clouds of {points} points, {name} "
              f"{steps} steps on {device}: {args.sample_num / dt:.2f} clouds/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--num", type=int, default=400,
                   help="clouds in each set (generated and reference) of the Chamfer timing")
    p.add_argument("--points", type=int, default=2048, help="points per cloud of that timing")
    p.add_argument("--classes", nargs="*", choices=CLASSES,
                   help="procedural classes of both sets (default: all six in turn)")
    p.add_argument("--baseline", choices=["kdtree", "brute"],
                   help="also compute the full distance matrices this way and compare")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu: pruned exact search; cuda: batched brute force")
    p.add_argument("--emd-pairs", type=int, default=5,
                   help="cloud pairs on which the EMD approximations meet the exact EMD")
    p.add_argument("--emd-points", type=int, default=2048, help="points per cloud of those")
    p.add_argument("--sinkhorn-iters", type=int, nargs="*", default=[300],
                   help="Sinkhorn iteration counts to time (none: skip Sinkhorn)")
    p.add_argument("--subsample-points", type=int, nargs="*", default=[256, 512, 1024],
                   help="subsample sizes to time (none: skip subsampling)")
    p.add_argument("--emd-sets", type=int, default=40,
                   help="set size of the exact-EMD metrics timing (0 skips it)")
    p.add_argument("--emd-set-points", type=int, default=256,
                   help="points per cloud of the exact-EMD metrics timing")
    p.add_argument("--sample-num", type=int, default=16, help="clouds sampled per config")
    p.add_argument("--configs", nargs="+", help="configs whose backbones sampling times",
                   default=["configs/shapes/procedural-tiny.yaml",
                                                    "configs/shapes/procedural.yaml"])
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: each config's sample_steps)")
    p.add_argument("--skip-metrics", action="store_true", help="skip the Chamfer timing")
    p.add_argument("--skip-emd", action="store_true",
                   help="skip the EMD accuracy and exact-EMD metrics timings")
    p.add_argument("--skip-sampling", action="store_true", help="skip the sampling timing")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {device}")
    if not args.skip_metrics:
        bench_metrics(args, device)
    if not args.skip_emd:
        bench_emd(args)
        if args.emd_sets:
            bench_emd_sets(args)
    if not args.skip_sampling:
        bench_sampling(args, device)


if __name__ == "__main__":
    main()
