"""``diffplat tune-steps``: fit a sampler's K noise levels to a trained model.

The levels minimise the discrepancy between the K-step solve and a high-NFE solve from the
same noise, on a few batches of the model's own prior (diffplat.samplers.tuning). They are
stored with the checkpoint (``CKPT.steps.json`` beside a .ckpt, ``step_schedules.json`` in
an export folder) and used by ``diffplat sample --spacing fitted``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str]) -> int:
    from diffplat import samplers
    from diffplat.cli.options import parse_options

    p = argparse.ArgumentParser(
        prog="diffplat tune-steps",
        description="Fit the noise levels of a K-step sampler to a trained model: the levels "
                    "that bring the K-step solve closest to a high-NFE solve from the same "
                    "noise, on a few batches of the model's prior. Stored with the "
                    "checkpoint; `diffplat sample --spacing fitted` uses them.")
    p.add_argument("--ckpt", required=True,
                   help="a Lightning checkpoint (.ckpt) or a folder written by `diffplat export`")
    p.add_argument("--sampler", required=True,
                   help=f"a deterministic sampler: {', '.join(samplers.names())}")
    p.add_argument("--nfe", type=int, required=True, help="denoiser evaluations (K)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="sampler option, e.g. -o order=2 -o spacing=log_snr (the start grid) "
                        "-o denoise_final=false (repeatable)")
    p.add_argument("--batches", type=int, default=2, help="prior batches to fit on (default 2)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fitting noise (default 0)")
    p.add_argument("--reference-steps", type=int, default=200,
                   help="steps of the accurate reference solve (UniPC-3; default 200)")
    p.add_argument("--max-evals", type=int, default=None,
                   help="K-step solves the optimiser may spend (default 40 min(K, 20))")
    p.add_argument("--prior", action="append", default=[], metavar="KEY=VALUE",
                   help="what to sample, passed to the domain (as for `diffplat sample`)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = p.parse_args(argv)
    from diffplat.cli.options import resolve_device
    from diffplat.cli.outputs import check_file_target
    from diffplat.store import load_model, step_schedules_path
    from diffplat.tune import tune_resolve as resolve
    from diffplat.tune import tune_steps as tune_module

    args.device = resolve_device(args.device)
    resolve(args.sampler, args.nfe, parse_options(args.option))  # bad input fails before loading
    if not Path(args.ckpt).exists():
        raise FileNotFoundError(f"checkpoint not found: {args.ckpt}")
    # where the schedule goes: an unwritable place fails now, not after the fit
    check_file_target(step_schedules_path(args.ckpt), "the fitted schedule file")
    module = load_model(args.ckpt, map_location=args.device).to(args.device)
    entry = tune_module(module, args.ckpt, args.sampler, args.nfe, parse_options(args.option),
                        args.batches, args.batch_size, args.seed, args.reference_steps,
                        args.max_evals, parse_options(args.prior),
                        log=lambda msg: print(f"tune-steps: {msg}"))
    levels = ", ".join(f"{v:.4g}" for v in entry["levels"])
    print(f"wrote the fitted {entry['steps']}-step schedule of {entry['sampler']} to "
          f"{entry['path']} (discrepancy {entry['initial_objective']:.4g} -> "
          f"{entry['objective']:.4g}, {entry['seconds']} s): levels {levels}")
    return 0
