"""Distilled students of the toy's exact denoiser against the teacher and against every
training-free sampler at the same NFE (issue #26, part 2; docs/core.md "Distillation").

For K = 1, 2, 4 it prints W2 to the exact mixture (2-D, 8 components; the same starting
noise for every row) of: the exact teacher at ~50 NFE (heun, 25 steps = 49 NFE), the best
training-free sampler at K NFE (every registered sampler at its defaults, and ``auto``), the
progressive and the consistency student at K NFE, and the CPU seconds each distillation
took. The teacher is exact, so it cost no training; the CPU time of training a toy teacher
(configs/toy/gmm.yaml) is given with ``--teacher-seconds`` if measured.

    OMP_NUM_THREADS=1 python benchmarks/distill_toy.py [--steps 1600] [--num 2000]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from diffplat import samplers
from diffplat.distill import distill, make_method
from diffplat.store import build_model
from domains.toy import ExactDenoiser
from domains.toy.metrics import w2_to_mixture

CONFIG = {"domain": {"class_path": "domains.toy.ToyDomain",
                     "init_args": {"dim": 2, "num_train": 4000, "num_val": 10,
                                   "num_test": 10}},
          "backbone": {"class_path": "domains.toy.MLPBackbone",
                       "init_args": {"dim": 2, "hidden": 64, "depth": 2, "emb_dim": 32}},
          "schedule": "cosine", "target": "v"}
SKIP = ("adaptive", "auto")  # adaptive has no fixed NFE; auto is run separately


def w2_of(denoise, noise, schedule, mixture, sampler, steps, **options) -> float:
    x = samplers.get(sampler)(denoise, noise, schedule, steps,
                              generator=torch.Generator().manual_seed(1), **options)
    return w2_to_mixture(x, mixture)["w2"]


def best_training_free(teacher, noise, schedule, mixture, nfe: int) -> tuple[float, str]:
    """The lowest W2 of any registered sampler at its defaults with ``nfe`` evaluations."""
    best = (float("inf"), "")
    for name in [*samplers.names(), "auto"]:
        if name in SKIP and name != "auto":
            continue
        try:
            if name == "auto":
                from diffplat.samplers.auto import choose

                picked, options = choose(nfe, schedule)
                steps = samplers.steps_for_nfe(picked, nfe, **options)
                value = w2_of(teacher, noise, schedule, mixture, picked, steps, **options)
                label = f"auto ({picked})"
            else:
                steps = samplers.steps_for_nfe(name, nfe)
                if samplers.nfe_for_steps(name, steps) != nfe:
                    continue
                value, label = w2_of(teacher, noise, schedule, mixture, name, steps), name
        except (ValueError, RuntimeError):
            continue
        best = min(best, (value, label))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1600, help="distillation steps per student")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--num", type=int, default=2000, help="samples per W2")
    p.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--teacher-seconds", type=float, default=None,
                   help="CPU seconds of a trained toy teacher, if measured")
    args = p.parse_args()
    torch.manual_seed(0)
    probe = build_model(CONFIG)
    mix, sched = probe.domain.mixture, probe.schedule
    teacher = ExactDenoiser(mix, sched)
    noise = torch.randn(args.num, 2, generator=torch.Generator().manual_seed(7))
    floor = w2_to_mixture(mix.sample(args.num, torch.Generator().manual_seed(3)), mix)
    ref = w2_of(teacher, noise, sched, mix, "heun", 25)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s); {args.num} samples; W2 of exact samples "
          f"(floor) {floor['w2']:.4f}; exact teacher heun 25 steps (49 NFE) {ref:.4f}")
    print("| K | best training-free at K | progressive | consistency | PD / teacher | "
          "CD / teacher | PD CPU s | CD CPU s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for k in args.nfe:
        free, label = best_training_free(teacher, noise, sched, mix, k)
        row = {}
        for method in ("progressive", "consistency"):
            torch.manual_seed(0)
            student = build_model(CONFIG)
            t0 = time.process_time()
            distill(teacher, method, k, student=student, steps=args.steps, lr=args.lr,
                    batch_size=256)
            seconds = time.process_time() - t0
            algo = make_method(method, sched, k)
            row[method] = (w2_of(student.ema_denoiser, noise, sched, mix, "ddim", k,
                                 levels=algo.levels(), **algo.sampler_options()), seconds)
        pd, cd = row["progressive"], row["consistency"]
        print(f"| {k} | {free:.4f} ({label}) | {pd[0]:.4f} | {cd[0]:.4f} | "
              f"{pd[0] / ref:.2f}x | {cd[0] / ref:.2f}x | {pd[1]:.1f} | {cd[1]:.1f} |")
    teacher_cost = (f"{args.teacher_seconds:.0f} CPU s" if args.teacher_seconds else
                    "none (exact)")
    print(f"# teacher training: {teacher_cost}; students: {args.steps} steps of 256, "
          f"MLP 64x2, lr {args.lr}")


if __name__ == "__main__":
    main()
