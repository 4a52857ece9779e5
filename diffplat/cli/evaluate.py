"""``diffplat evaluate``: score samples (from a model or a folder) or the reference data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diffplat.cli.domains import instantiate_domain
from diffplat.cli.options import given_options, refuse_unused, usage_error
from diffplat.cli.sample import META_FILE, SAMPLING, add_sampling_args, generate

#: Which flag goes with which mode: "sample" and "inpaint" draw from a model, "samples"
#: scores a folder written by `diffplat sample`, "reference" scores the data itself.
TABLE = {**SAMPLING,
         **{dest: ("sample", "inpaint", "reference") for dest in ("ckpt", "model", "config",
                                                                   "num")},
         "samples": ("samples",), "reference": ("reference",),
         "data": ("samples", "reference"),
         "split": ("sample", "inpaint", "samples", "reference"),
         "json": ("sample", "inpaint", "samples", "reference"),
         "stability_protocol": ("sample", "inpaint", "samples", "reference")}
MODES = {"sample": "sampling from a model (--ckpt, --model or -c)",
         "inpaint": "inpainting with a model (--inpaint)",
         "samples": "scoring a sample folder (--samples)",
         "reference": "scoring the reference data (--reference)"}


def mode_of(args: argparse.Namespace) -> str:
    if args.samples:
        return "samples"
    if args.reference:
        return "reference"
    return "inpaint" if args.inpaint else "sample"


def domain_from_samples(folder: Path, data: str | None = None):
    """The domain that wrote a ``diffplat sample`` folder (its meta.json), under the trust
    rule; ``data`` replaces its data_path. Public (``diffplat.cli.plugin``)."""
    from diffplat.trust import check_class_paths, enforced

    meta_file = folder / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: --samples needs a folder written by "
                                "`diffplat sample` (it records which domain made the samples)")
    try:
        cfg = json.loads(meta_file.read_text())["domain"]
    except (ValueError, KeyError) as err:
        raise ValueError(f"{meta_file}: not a diffplat sample record ({err})") from None
    check_class_paths(cfg, source=str(meta_file))
    if not isinstance(cfg, dict) or not isinstance(cfg.get("init_args", {}), dict):
        raise ValueError(f"{meta_file}: 'domain' must be a class_path/init_args record")
    if data is not None:
        cfg = {**cfg, "init_args": {**(cfg.get("init_args") or {}), "data_path": data}}
    with enforced(source=str(meta_file)):  # the rule again, at the import itself
        return instantiate_domain(cfg)


def domain_from_config(path: Path, data: str | None = None):
    """The domain of a training config (its ``model.domain``); ``data`` replaces its
    data_path. Public (``diffplat.cli.plugin``)."""
    from diffplat.configs import load_yaml

    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    domain = (load_yaml(path).get("model") or {}).get("domain")
    if not isinstance(domain, dict):
        raise ValueError(f"{path}: no model.domain section")
    return instantiate_domain(_with_data(domain, data))


#: the names these had before they were public (benchmarks/conformers_td_scoring.py)
_domain_from_meta, _domain_from_config = domain_from_samples, domain_from_config


def _with_data(cfg: dict, data: str | None) -> dict:
    """A domain configuration whose data_path is ``data`` (unchanged when None)."""
    if data is None:
        return cfg
    return {**cfg, "init_args": {**(cfg.get("init_args") or {}), "data_path": data}}


def check_count(folder: Path, count: int) -> None:
    """More samples in a folder than its meta.json records: files of another run (an
    --out reused before diffplat refused it) would be scored with these."""
    num = json.loads((folder / META_FILE).read_text()).get("num")
    if isinstance(num, int) and count > num:
        raise ValueError(f"{folder} holds {count} samples but its {META_FILE} records {num}: "
                         "files of another run are mixed in; sample again into a new folder")


def print_table(metrics: dict[str, float], title: str) -> None:
    width = max(len(k) for k in metrics)
    print(title)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def main(argv: list[str]) -> int:
    from diffplat import plugins

    modes = plugins.evaluators()
    if argv and argv[0] in modes:  # a domain's own evaluation (diffplat evaluate conformers)
        return plugins.command(modes[argv[0]][1])(argv[1:])
    p = argparse.ArgumentParser(
        prog="diffplat evaluate",
        description="Score samples with the domain's metrics. Either sample from a model "
                    "(--ckpt, --model or -c CONFIG, with --num, --sampler, --steps, --seed as "
                    "in `diffplat sample`), or read a folder written by `diffplat sample` "
                    "(--samples), or, with --reference, score the reference data itself (the "
                    "ceiling row; -c CONFIG then needs no checkpoint). Prints the metrics and "
                    "writes them as JSON with --json.")
    add_sampling_args(p, required=False)
    p.add_argument("--samples", help="a folder written by `diffplat sample`")
    p.add_argument("--reference", action="store_true",
                   help="score the domain's reference data instead of generated samples")
    p.add_argument("--split", default=None,
                   help="reference split (default test; with --reference --data: all, every "
                        "molecule of the given data where the domain has it)")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="with --samples: the dataset to score against, when it is not where "
                        "the model was trained (the domain's data_path); with --reference: "
                        "the data to score as the reference (e.g. your own SDF)")
    p.add_argument("--stability-protocol", choices=("auto", "edm", "drugs"), default=None,
                   help="molecules: score stability with EDM's QM9 tables (edm), the "
                        "drug-like protocol of Nikitin et al. 2025 (drugs) or as the data's "
                        "elements choose (auto, the domain's default); see docs/molecules.md")
    p.add_argument("--json", help="write the metrics to this JSON file")
    args = p.parse_args(argv)
    bad = refuse_unused(given_options(p, argv), mode_of(args), TABLE, MODES)
    if bad:
        return usage_error(p.prog, bad)
    sources = [x for x in (args.ckpt, args.model, args.samples, args.config) if x]
    if len(sources) != 1:
        p.error("give exactly one of --ckpt, --model, -c/--config or --samples")
    if args.json:  # an unwritable target fails now, not after the work
        from diffplat.cli.outputs import check_file_target

        check_file_target(args.json, "--json")
    if mode_of(args) in ("sample", "inpaint"):
        from diffplat.cli.sample import check_sampling_args

        check_sampling_args(args)
    info: dict[str, Any] = {}
    if args.samples:
        domain = domain_from_samples(Path(args.samples), args.data)  # metrics set it up
        samples = domain.read(Path(args.samples))
        check_count(Path(args.samples), len(samples))
        info["samples"] = args.samples
    elif args.reference:
        if args.config:
            domain = domain_from_config(Path(args.config), args.data)
        else:
            from diffplat.cli.sample import model_source
            from diffplat.store import load_model

            module = load_model(model_source(args))
            domain = module.domain
            if args.data is not None:  # the given data is the reference, not the model's
                domain = instantiate_domain(_with_data(module.hparams["domain"], args.data))
        domain.setup("test")
        samples = None
    else:
        module, samples, stats = generate(args)
        domain = module.domain
        info.update(ckpt=stats["source"], **{k: v for k, v in stats.items()
                                             if k not in ("options", "source")})
        # the sampler's own options (-o), so a card can repeat the sampling exactly
        extra = {k: v for k, v in (stats.get("options") or {}).items()
                 if k not in ("levels", "spacing")}
        if extra:
            info["sampler_options"] = extra
    if args.stability_protocol is not None:
        if not hasattr(domain, "stability_protocol"):
            raise ValueError(f"--stability-protocol applies to molecules, not {domain.name}")
        domain.stability_protocol = args.stability_protocol
    whole = "all" in getattr(domain, "reference_splits", ())   # a domain that can score all
    split = args.split or ("all" if args.reference and args.data and whole else "test")
    if args.reference:
        samples = domain.reference(args.num, split)
        info.update(reference=split, **({"data": args.data} if args.data else {}))
    num = len(samples)
    metrics = domain.metrics(samples, split)
    title = f"{domain.name}: {num} " + ("reference samples" if args.reference else "samples")
    print_table(metrics, title)
    if args.json:
        from diffplat.cli.outputs import write_text

        write_text(args.json, json.dumps({"metrics": metrics, **info}, indent=2, default=str),
                   "the metrics")
        print(f"wrote {args.json}")
    return 0
