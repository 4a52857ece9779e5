"""``diffplat sample``: draw samples from a trained model and write them to files."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from diffplat.cli.options import given_options, parse_options, refuse_unused, usage_error

META_FILE = "meta.json"

__all__ = ["META_FILE", "SAMPLING", "add_sampling_args", "check_sampling_args", "generate",
           "main", "parse_options", "prepare_out_dir", "model_source"]

#: The flags of add_sampling_args and the modes they apply to: "sample" draws from the
#: prior, "inpaint" keeps part of a given file (--inpaint) and generates the rest.
SAMPLING = {**{dest: ("sample", "inpaint") for dest in (
    "ckpt", "model", "config", "num", "sampler", "steps", "nfe", "spacing", "seed",
    "batch_size", "option", "prior", "guidance", "inpaint", "device", "no_progress")},
    "mask": ("inpaint",), "resample": ("inpaint",)}
#: `diffplat sample`'s table: the sampling flags, and where the samples go.
TABLE = {**SAMPLING, "out": ("sample", "inpaint"), "overwrite": ("sample", "inpaint")}
MODES = {"sample": "sampling without --inpaint", "inpaint": "--inpaint"}


def _mask_help() -> str:
    from diffplat import plugins

    forms = [p.mask_help for p in plugins.plugins().values() if p.mask_help]
    return ("with --inpaint: the kept part, in the domain's terms (" + "; ".join(forms) + ")"
            if forms else "with --inpaint: the kept part, in the domain's terms")


def add_sampling_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    from diffplat import samplers
    from diffplat.samplers.grids import spacings

    src = p.add_argument_group("the model (one of)")
    src.add_argument("--ckpt", help="a Lightning checkpoint (.ckpt) or a folder written by "
                                    "`diffplat export`")
    src.add_argument("--model", help="the name of a model shipped with diffplat "
                                     "(diffplat.models)")
    src.add_argument("--config", "-c", help="a training config: its run's last checkpoint "
                                            "(<trainer.default_root_dir>/checkpoints)")
    p.set_defaults(_model_required=required)
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
    p.add_argument("--mask", default=None, metavar="SPEC", help=_mask_help())
    p.add_argument("--resample", type=int, default=1, metavar="R",
                   help="with --inpaint: denoiser calls per step (RePaint-style, default 1)")
    p.add_argument("--device", default=None,
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def model_source(args: argparse.Namespace) -> str | Path | None:
    """What --ckpt, --model or -c name (exactly one of them), as a path."""
    given = [x for x in (args.ckpt, args.model, args.config) if x]
    if len(given) > 1:
        raise ValueError("give one of --ckpt, --model and --config")
    if args.ckpt:
        return args.ckpt
    if args.model:
        from diffplat.models import find_model

        return find_model(args.model)
    if args.config:
        from diffplat.configs import load_yaml

        cfg = load_yaml(Path(args.config))
        root = Path((cfg.get("trainer") or {}).get("default_root_dir") or "runs/default")
        last = root / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise FileNotFoundError(f"{args.config} trains into {root}, which holds no "
                                    f"checkpoint yet ({last}); run `diffplat fit -c "
                                    f"{args.config}` first")
        return last
    if getattr(args, "_model_required", True):
        raise ValueError("give the model: --ckpt CKPT, --model NAME or -c CONFIG")
    return None


def prepare_out_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Check that ``--out`` can take the samples before any sampling is spent on it (it is
    written only at the end, by diffplat.cli.outputs.staged)."""
    from diffplat.cli.outputs import check_out

    return check_out(path, overwrite, marker=META_FILE, command="diffplat sample")


def check_sampling_args(args: argparse.Namespace) -> None:
    """The sampling flags' values, before any model is loaded: ValueError naming the
    flag."""
    from diffplat.cli.options import resolve_device
    from diffplat.sampling import check_guidance

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    for flag, value in (("--steps", args.steps), ("--nfe", args.nfe),
                        ("--batch-size", args.batch_size), ("--resample", args.resample)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.steps is not None and args.nfe is not None:
        raise ValueError("give --steps or --nfe, not both")
    if args.sampler is not None and args.sampler.lower() != "auto":
        from diffplat import samplers

        samplers.get(args.sampler)
    check_guidance(args.guidance, "--guidance")
    args.device = resolve_device(args.device)


def generate(args: argparse.Namespace):
    """Load the model that the arguments name and draw samples as they say.
    Returns (module, samples, stats)."""
    from diffplat.progress import bar as progress_bar
    from diffplat.sampling import check_sampler_options, resolve_sampler
    from diffplat.store import load_model

    check_sampling_args(args)
    source = model_source(args)
    device = args.device
    module = load_model(source, map_location=device).to(device)
    hp = module.hparams
    name, steps, options = resolve_sampler(
        args.sampler, args.steps, args.nfe, args.spacing, parse_options(args.option),
        schedule=module.schedule, default_sampler=hp.sampler, default_steps=hp.sample_steps,
        fitted_source=source)
    check_sampler_options(name, options)
    inpaint = args.inpaint
    if inpaint is not None:
        if not Path(inpaint).exists():
            raise FileNotFoundError(f"--inpaint: no such file {inpaint}")
        if args.mask is None:
            raise ValueError("--inpaint needs --mask (which part of the input is kept)")
        inpaint = (inpaint, args.mask)
    bar = None
    if not args.no_progress:
        chunks = -(-args.num // (args.batch_size or args.num))
        total = None if name == "adaptive" else steps * chunks  # adaptive: steps unknown
        bar = progress_bar(total=total, desc=f"sampling ({name}, {steps} steps)", unit="step")
    t0 = time.perf_counter()
    try:
        samples, stats = module.generate(
            args.num, sampler=name, steps=steps, seed=args.seed, batch_size=args.batch_size,
            callback=(lambda info: bar.update(1)) if bar else None, sampler_options=options,
            guidance=args.guidance, inpaint=inpaint, resample=args.resample,
            **parse_options(args.prior))
    finally:
        if bar:
            bar.close()
    stats.update(seconds=round(time.perf_counter() - t0, 3), options=options,
                 requested_sampler=args.sampler or "auto", spacing=args.spacing,
                 prior=parse_options(args.prior), guidance=args.guidance,
                 inpaint=list(inpaint) if inpaint else None, source=str(source))
    return module, samples, stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffplat sample",
        description="Draw samples with a trained model's EMA weights and write them in the "
                    "domain's own file formats, plus preview.png and meta.json (what was run).")
    add_sampling_args(p)
    p.add_argument("--out", required=True,
                   help="output folder: new or empty, written in one piece when sampling ends")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the content of a non-empty --out (only once the new samples "
                        "are complete)")
    return p


def main(argv: list[str]) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    bad = refuse_unused(given_options(p, argv), "inpaint" if args.inpaint else "sample",
                        TABLE, MODES)
    if bad:
        return usage_error(p.prog, bad)
    check_sampling_args(args)
    out = prepare_out_dir(args.out, args.overwrite)
    module, samples, stats = generate(args)
    from diffplat.cli.outputs import staged

    meta = {"ckpt": stats["source"], "domain": module.hparams["domain"], "num": args.num,
            "seed": args.seed, "batch_size": args.batch_size, **stats,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with staged(out, args.overwrite, what=f"the {args.num} samples") as tmp:
        paths = module.domain.write(samples, tmp)
        preview = module.domain.preview(samples, tmp / "preview.png")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    names = [p.name for p in [*paths, preview]]
    if len(names) > 8:                  # one file per sample (audio): name a few of them
        names = [*names[:3], f"... {len(names) - 5} more ...", *names[-2:]]
    print(f"wrote {args.num} samples ({stats['sampler']}, {stats['steps']} steps, "
          f"{stats['nfe']} evaluations per batch, {stats['seconds']} s) to {out}: "
          + ", ".join(names))
    return 0
