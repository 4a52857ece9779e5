"""``diffplat sample``: draw samples from a trained model and write them to files."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from diffplat.checks import positive_int
from diffplat.cli.options import given_options, parse_options, refuse_unused, usage_error
from diffplat.request import SamplingRequest

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
    own = "; ".join(f"{n}: {', '.join(o.name for o in samplers.options(n, common=False))}"
                    for n in samplers.names() if samplers.options(n, common=False))
    common = ", ".join(o.name for o in samplers.options("auto"))
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sampler option, e.g. -o eta=0.5 -o s_churn=10 (repeatable), "
                        "checked against the sampler's declared options before sampling. "
                        f"Every sampler takes {common}; their own: {own} (types, ranges "
                        "and defaults: diffplat.samplers.describe(NAME))")
    p.add_argument("--prior", action="append", default=[], metavar="KEY=VALUE",
                   help="one of the domain's own sampling options, as it declares them "
                        "(Domain.sampling_options, checked before sampling), e.g. --prior "
                        "num_atoms=19, --prior alpha=80 for a property-conditional molecule "
                        "model, --prior smiles=CCO for conformers (repeatable)")
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


#: How the request's fields are spelled on the command line (for its errors).
FLAGS = {"steps": "--steps", "nfe": "--nfe", "batch_size": "--batch-size",
         "resample": "--resample", "guidance": "--guidance"}


def sampling_request(args: argparse.Namespace) -> SamplingRequest:
    """The sampling flags as a checked ``SamplingRequest`` (errors name the flag)."""
    inpaint = (args.inpaint, args.mask) if args.inpaint is not None else None
    return SamplingRequest(args.sampler, args.steps, args.nfe, args.spacing,
                           parse_options(args.option), args.seed, args.batch_size,
                           args.guidance, inpaint, args.resample).check(FLAGS)


def check_sampling_args(args: argparse.Namespace) -> None:
    """The sampling flags' values, before any model is loaded: ValueError naming the
    flag."""
    from diffplat.cli.options import resolve_device

    positive_int(args.num, "--num")
    sampling_request(args)
    args.device = resolve_device(args.device)


def read_card(source: str | Path) -> dict | None:
    """The model card (``card.json``) of an export folder, or None."""
    card = Path(source) / "card.json"
    if not card.is_file():
        return None
    try:
        return json.loads(card.read_text())
    except ValueError:
        raise ValueError(f"{card}: not a JSON model card") from None


def generate(args: argparse.Namespace):
    """Load the model that the arguments name and draw samples as they say: the domain's
    ``--prior`` options checked against its declaration and handed to ``Domain.sample``,
    as ``Pipeline.sample`` does. Returns (module, samples, stats)."""
    from diffplat.domain_options import check_options
    from diffplat.progress import bar as progress_bar
    from diffplat.sampling import check_sampler_options
    from diffplat.store import load_model

    check_sampling_args(args)
    request = sampling_request(args)
    source = model_source(args)
    device = args.device
    module = load_model(source, map_location=device).to(device)
    hp = module.hparams
    if request.inpaint is not None:
        if not Path(request.inpaint[0]).exists():
            raise FileNotFoundError(f"--inpaint: no such file {request.inpaint[0]}")
        if args.mask is None:
            raise ValueError("--inpaint needs --mask (which part of the input is kept)")
    prior = parse_options(args.prior)
    given = check_options(module.domain.sampling_options, prior,
                          f"the {module.domain.name!r} domain", lambda k: f"--prior {k}")

    def draw(**prior_options):
        name, steps, options = request.resolve(
            module.schedule, default_sampler=hp.sampler, default_steps=hp.sample_steps,
            fitted_source=source)
        check_sampler_options(name, options)
        bar = None
        if not args.no_progress:
            chunks = -(-args.num // (args.batch_size or args.num))
            total = None if name == "adaptive" else steps * chunks  # adaptive: steps unknown
            bar = progress_bar(total=total, desc=f"sampling ({name}, {steps} steps)",
                               unit="step")
        try:
            samples, stats = module.generate(
                args.num, sampler=name, steps=steps, seed=args.seed,
                batch_size=args.batch_size,
                callback=(lambda info: bar.update(1)) if bar else None,
                sampler_options=options, guidance=request.guidance, inpaint=request.inpaint,
                resample=args.resample, **prior_options)
        finally:
            if bar:
                bar.close()
        return samples, {**stats, "options": options}

    t0 = time.perf_counter()
    samples, stats = module.domain.sample(module, args.num, request, given, draw,
                                          read_card(source))
    stats = dict(stats)
    stats.setdefault("options", {})
    stats.update(seconds=round(time.perf_counter() - t0, 3),
                 requested_sampler=args.sampler or "auto", spacing=args.spacing,
                 prior=prior, guidance=args.guidance,
                 inpaint=list(request.inpaint) if request.inpaint else None,
                 source=str(source))
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
    per_batch = f", {stats['nfe']} evaluations per batch" if "nfe" in stats else ""
    print(f"wrote {args.num} samples ({stats['sampler']}, {stats['steps']} steps"
          f"{per_batch}, {stats['seconds']} s) to {out}: "
          + ", ".join(names))
    return 0
