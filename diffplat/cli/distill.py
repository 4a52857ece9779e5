"""``diffplat distill``: a few-step student of a trained model (diffplat.distill).

    diffplat distill --teacher CKPT|EXPORT|NAME --method progressive|consistency --nfe K
                     [--steps N --lr LR --batch-size B --seed S --out DIR]
                     [--ckpt_path last]                      resume DIR/last.ckpt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

#: the methods' own flags: flag -> (method, keyword of the method's constructor)
METHOD_FLAGS = {"teacher_steps": "progressive", "spacing": "progressive",
                "points": "consistency", "target_decay": "consistency",
                "level_min": "consistency"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffplat distill",
        description="Distil a trained model (the teacher) into a student that samples in "
                    "K network evaluations: progressive distillation (Salimans & Ho 2022) or "
                    "consistency distillation (Song et al. 2023). The student is a checkpoint "
                    "like any other: `diffplat sample --ckpt OUT/last.ckpt` samples it in K "
                    "steps on the grid it was distilled on, `diffplat export` exports it.")
    p.add_argument("--teacher", required=True,
                   help="a checkpoint (.ckpt), an export folder or a shipped model's name")
    p.add_argument("--method", required=True, choices=("progressive", "consistency"),
                   help="progressive (halve the teacher's DDIM steps per round) or "
                        "consistency (one-step consistency function, Alg. 2)")
    p.add_argument("--nfe", type=int, required=True, metavar="K",
                   help="the student's network evaluations per sample")
    p.add_argument("--steps", type=int, default=2000,
                   help="optimizer steps in all (progressive: split over its rounds; "
                        "default 2000)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (1e-4)")
    p.add_argument("--batch-size", type=int, default=256, help="items per step (256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--out", default=None,
                   help="folder of the student's checkpoint last.ckpt (default "
                        "runs/distill-<method>-<K>)")
    p.add_argument("--ckpt_path", "--ckpt-path", default=None, choices=("last",),
                   help="last: resume OUT/last.ckpt with the same options (exact restart)")
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    own = p.add_argument_group("progressive")
    own.add_argument("--teacher-steps", type=int, default=None,
                     help="the teacher's DDIM steps before the first round, at least "
                          "(default 64; rounded up to K 2^R)")
    own.add_argument("--spacing", default=None,
                     help="spacing of the teacher's grid (default: the schedule's)")
    cons = p.add_argument_group("consistency")
    cons.add_argument("--points", type=int, default=None,
                      help="levels of the discretisation (default 18)")
    cons.add_argument("--target-decay", type=float, default=None,
                      help="EMA decay mu of the target network (default 0.95)")
    cons.add_argument("--level-min", type=float, default=None,
                      help="epsilon, the smallest level (default 0.002)")
    p.add_argument("--level-max", type=float, default=None,
                   help="the top noise level (default 80, clipped to the schedule)")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The method's own options; a flag of the other method, or a bad value, is a usage
    error naming the flag."""
    from diffplat.checks import positive_int

    for dest in ("nfe", "steps", "batch_size", "save_every"):
        try:
            positive_int(getattr(args, dest), "--" + dest.replace("_", "-"))
        except ValueError as err:
            p.error(str(err))
    if not args.lr > 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    if args.log_every < 0:
        p.error(f"--log-every must be >= 0, got {args.log_every}")
    options = {}
    for dest, method in METHOD_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if method != args.method:
            p.error(f"--{dest.replace('_', '-')} is an option of --method {method}, not "
                    f"of --method {args.method}")
        options[dest] = value
    if args.teacher_steps is not None and args.teacher_steps < 2 * args.nfe:
        p.error(f"--teacher-steps must be at least 2 x --nfe = {2 * args.nfe}, got "
                f"{args.teacher_steps}")
    if args.level_max is not None:
        options["level_max"] = args.level_max
    return options


def main(argv: list[str]) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    options = check_args(p, args)
    from diffplat.cli.options import resolve_device
    from diffplat.distill import CKPT_NAME, distill

    device = resolve_device(args.device)
    out = Path(args.out or f"runs/distill-{args.method}-{args.nfe}")
    if (out / CKPT_NAME).is_file() and args.ckpt_path != "last":
        p.error(f"{out / CKPT_NAME} exists: add --ckpt_path last to resume it, or choose "
                "another --out")
    if args.ckpt_path == "last" and not (out / CKPT_NAME).is_file():
        p.error(f"--ckpt_path last: {out / CKPT_NAME} does not exist yet")
    command = "diffplat distill " + " ".join(argv)
    t0 = time.perf_counter()
    distill(args.teacher, args.method, args.nfe, steps=args.steps, lr=args.lr,
            batch_size=args.batch_size, seed=args.seed, out=out,
            resume=args.ckpt_path == "last", save_every=args.save_every,
            log_every=args.log_every, device=device, record={"command": command}, **options)
    print(f"wrote {out / CKPT_NAME}: a {args.nfe}-step {args.method} student of "
          f"{args.teacher} ({args.steps} steps, {time.perf_counter() - t0:.1f} s); sample it "
          f"with `diffplat sample --ckpt {out / CKPT_NAME} --out DIR`")
    return 0
