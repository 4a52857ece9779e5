"""``diffplat export``: EMA weights as safetensors plus the configuration as JSON."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="diffplat export",
        description="Write a checkpoint's EMA weights as model.safetensors and its model "
                    "configuration as config.json (and the step schedules fitted by "
                    "`diffplat tune-steps` as step_schedules.json). `diffplat sample --ckpt "
                    "DIR` and diffplat.training.checkpoint.load_module(DIR) load the folder "
                    "without "
                    "unpickling anything.")
    p.add_argument("--ckpt", required=True, help="a Lightning checkpoint written by `fit`")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    from diffplat.training.checkpoint import export, export_step_schedules, load_module

    paths = export(load_module(args.ckpt), args.out)
    steps = export_step_schedules(args.ckpt, args.out)
    if steps is not None:
        paths.append(steps)
    print("wrote " + ", ".join(str(x) for x in paths))
    return 0
