"""``diffplat sample``: draw samples from a trained model and write them to files."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from diffplat import samplers
from diffplat.samplers.grids import spacings

META_FILE = "meta.json"


def add_sampling_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--ckpt", required=required,
                   help="a Lightning checkpoint (.ckpt) or a folder written by `diffplat export`")
    p.add_argument("--num", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--sampler", default=None,
                   help=f"sampler: {', '.join(samplers.names())} (default: auto, the "
                        "configuration measured best for the number of evaluations)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: the model's sample_steps)")
    p.add_argument("--nfe", type=int, default=None,
                   help="denoiser evaluations instead of --steps (default for auto: what the "
                        "model's own sampler and sample_steps spend)")
    p.add_argument("--spacing", default=None,
                   help=f"step spacing: {', '.join(spacings.names())}, or fitted (the levels "
                        "`diffplat tune-steps` stored with the checkpoint); default: karras, "
                        "uniform_t for flow schedules")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per sampler call (default: all at once); the output for a "
                        "seed is reproducible for a fixed batch size")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sampler option, e.g. -o eta=0.5 -o s_churn=10 (repeatable)")
    p.add_argument("--prior", action="append", default=[], metavar="KEY=VALUE",
                   help="what to sample, passed to the domain, e.g. --prior num_atoms=19 or, "
                        "for a property-conditional molecule model, --prior alpha=80 "
                        "(repeatable)")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance weight for a conditional model (1 = plain "
                        "conditional, 0 = unconditional; default: none)")
    p.add_argument("--inpaint", default=None, metavar="PATH",
                   help="inpaint, continue or complete the data in PATH (a file in the "
                        "domain's format); --mask says which part is kept")
    p.add_argument("--mask", default=None, metavar="SPEC",
                   help="with --inpaint: the kept part, in the domain's terms (audio: time "
                        "ranges in seconds such as 0:0.5 or 0:0.25,0.75:; shapes: view:+x "
                        "or first; toy: known dimensions such as 0)")
    p.add_argument("--resample", type=int, default=1, metavar="R",
                   help="with --inpaint: denoiser calls per step (RePaint-style, default 1)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"option {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def check_cli_sampling(sampler: str | None, steps: int | None, nfe: int | None) -> None:
    """One-line errors for bad --sampler / --steps / --nfe, before any model is loaded."""
    if sampler is not None:
        samplers.get(sampler)
    for flag, value in (("--steps", steps), ("--nfe", nfe)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if steps is not None and nfe is not None:
        raise ValueError("give --steps or --nfe, not both")


def resolve_sampling(module, ckpt, sampler: str | None, steps: int | None, nfe: int | None,
                     spacing: str | None, options: dict[str, Any]
                     ) -> tuple[str, int, dict[str, Any]]:
    """The sampler, its steps and options that --sampler/--steps/--nfe/--spacing mean.

    ``auto`` (the default) becomes the measured configuration for the evaluation budget
    (--nfe, else --steps, else what the model's own sampler spends at its sample_steps);
    ``--spacing fitted`` replaces the grid by the levels stored by ``tune-steps``."""
    from diffplat.samplers.auto import choose
    from diffplat.samplers.tuning import GRID_OPTIONS
    from diffplat.training.checkpoint import fitted_schedule

    check_cli_sampling(sampler, steps, nfe)
    hp = module.hparams
    name = (sampler or "auto").lower().replace("-", "_")
    if name == "auto":
        if nfe is None:
            nfe = steps or (hp.sample_steps if hp.sampler in ("adaptive", "auto") else
                            samplers.nfe_for_steps(hp.sampler, hp.sample_steps))
        name, table = choose(nfe, module.schedule)
        options = {**table, **options}
        steps = samplers.steps_for_nfe(name, nfe, **options)
    elif steps is None:
        steps = samplers.steps_for_nfe(name, nfe, **options) if nfe else hp.sample_steps
    if spacing is not None and spacing.lower() == "fitted":
        entry = fitted_schedule(ckpt, name, steps)
        options = {k: v for k, v in {**entry["options"], **options}.items()
                   if k not in GRID_OPTIONS}
        options["levels"] = entry["levels"]
    elif spacing is not None:
        spacings.get(spacing)
        options = {k: v for k, v in options.items() if k != "levels"}
        options["spacing"] = spacing
    return name, steps, options


def generate(args: argparse.Namespace):
    """Load the model named by --ckpt and draw samples as the arguments say."""
    from tqdm.auto import tqdm

    from diffplat.training.checkpoint import load_module

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    check_cli_sampling(args.sampler, args.steps, args.nfe)
    module = load_module(args.ckpt, map_location=args.device).to(args.device)
    name, steps, options = resolve_sampling(module, args.ckpt, args.sampler, args.steps,
                                            args.nfe, args.spacing, parse_options(args.option))
    inpaint = args.inpaint
    if inpaint is not None:
        if not Path(inpaint).exists():
            raise FileNotFoundError(f"--inpaint: no such file {inpaint}")
        if args.mask is None:
            raise ValueError("--inpaint needs --mask (which part of the input is kept)")
        inpaint = (inpaint, args.mask)
    bar = None
    if not args.no_progress and name != "adaptive":
        chunks = -(-args.num // (args.batch_size or args.num))
        bar = tqdm(total=steps * chunks, desc=f"sampling ({name}, {steps} steps)", unit="step")
    t0 = time.perf_counter()
    samples, stats = module.generate(
        args.num, sampler=name, steps=steps, seed=args.seed, batch_size=args.batch_size,
        callback=(lambda info: bar.update(1)) if bar else None, sampler_options=options,
        guidance=args.guidance, inpaint=inpaint, resample=args.resample,
        **parse_options(args.prior))
    if bar:
        bar.close()
    stats.update(seconds=round(time.perf_counter() - t0, 3), options=options,
                 requested_sampler=args.sampler or "auto", spacing=args.spacing,
                 prior=parse_options(args.prior), guidance=args.guidance,
                 inpaint=list(inpaint) if inpaint else None)
    return module, samples, stats


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="diffplat sample",
        description="Draw samples with a trained model's EMA weights and write them in the "
                    "domain's own file formats, plus preview.png and meta.json (what was run).")
    add_sampling_args(p)
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    module, samples, stats = generate(args)
    out = Path(args.out)
    paths = module.domain.write(samples, out)
    preview = module.domain.preview(samples, out / "preview.png")
    meta = {"ckpt": str(args.ckpt), "domain": module.hparams["domain"], "num": args.num,
            "seed": args.seed, "batch_size": args.batch_size, **stats,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    names = [p.name for p in [*paths, preview]]
    if len(names) > 8:                  # one file per sample (audio): name a few of them
        names = [*names[:3], f"... {len(names) - 5} more ...", *names[-2:]]
    print(f"wrote {args.num} samples ({stats['sampler']}, {stats['steps']} steps, "
          f"{stats['nfe']} evaluations per batch, {stats['seconds']} s) to {out}: "
          + ", ".join(names))
    return 0
