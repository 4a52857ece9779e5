"""diffplat export: a checkpoint as a stand-alone folder (safetensors + JSON), optionally
with a model card (the form of the models shipped under models/)."""

import argparse
import json
from pathlib import Path

from diffplat.cli.options import given_options, refuse_unused, usage_error

#: the sampling settings of `diffplat evaluate --json` a model card keeps beside its metrics
MEASURED_WITH = ("sampler", "steps", "nfe", "spacing", "sampler_options", "guidance", "prior",
                 "refine")
#: Which flag goes with which mode: a plain export, a model card, a card with --metrics.
_ALL = ("plain", "card", "metrics")
TABLE = {"ckpt": _ALL, "out": _ALL, "overwrite": _ALL, "asset": _ALL,
         **{dest: ("card", "metrics") for dest in ("name", "description", "data_license",
                                                   "metrics", "notes")},
         "metrics_command": ("metrics",)}
MODES = {"plain": "an export without a model card",
         "card": "a model card without --metrics", "metrics": "a model card with --metrics"}


def mode_of(args: argparse.Namespace) -> str:
    if args.metrics:
        return "metrics"
    card = (args.name, args.description, args.data_license, args.metrics_command, args.notes)
    return "card" if any(card) else "plain"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffplat export",
        description="Write a checkpoint's EMA weights as model.safetensors and its model "
                    "configuration as config.json (and the step schedules fitted by "
                    "`diffplat tune-steps` as step_schedules.json). `diffplat sample --ckpt "
                    "DIR` and diffplat.load(DIR) load the folder without unpickling "
                    "anything. With --name (or any other card option) it also writes a model "
                    "card, card.json and MODEL_CARD.md, from what the checkpoint recorded "
                    "(command, steps, wall time, device) plus the options below.")
    p.add_argument("--ckpt", required=True, help="a Lightning checkpoint written by `fit`")
    p.add_argument("--out", required=True,
                   help="output folder: new or empty, written in one piece at the end")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the content of a non-empty --out (only once the new export "
                        "is complete)")
    card = p.add_argument_group("model card")
    card.add_argument("--name", help="the model's name (the folder name under models/)")
    card.add_argument("--description", help="one line on what the model generates")
    card.add_argument("--data-license", help="the training data and its licence")
    card.add_argument("--metrics", metavar="JSON",
                      help="metrics.json written by `diffplat evaluate --json`")
    card.add_argument("--metrics-command", help="the command that measured --metrics")
    card.add_argument("--notes", help="anything else a user should know (shortfalls)")
    p.add_argument("--asset", action="append", default=[], metavar="OPTION=PATH",
                   help="a file the domain's evaluation reads, set on the domain's OPTION "
                        "and copied into the folder's assets/ (repeatable), e.g. "
                        "property_predictor=runs/qm9-alpha-predictor/checkpoints/last.ckpt "
                        "for a property-conditional molecule model")
    return p


def main(argv: list[str]) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    bad = refuse_unused(given_options(p, argv), mode_of(args), TABLE, MODES)
    if bad:
        return usage_error(p.prog, bad)
    from diffplat.cli.outputs import check_out, staged
    from diffplat.store import export_step_schedules, load_model

    # a link, a used folder (unless --overwrite, and then only an export): refused now
    check_out(args.out, args.overwrite, marker="config.json", command="diffplat export")

    assets = {}
    for item in args.asset:
        option, sep, path = item.partition("=")
        if not sep or not option or not path:
            p.error(f"--asset {item!r}: give OPTION=PATH")
        if not Path(path).is_file():
            p.error(f"--asset {item}: {path} is not a file")
        assets[option] = path

    extra = {k: v for k, v in (("name", args.name), ("description", args.description),
                               ("data_license", args.data_license),
                               ("metrics_command", args.metrics_command),
                               ("notes", args.notes)) if v}
    metrics = None
    if args.metrics:
        try:
            data = json.loads(Path(args.metrics).read_text())
        except (OSError, ValueError) as err:
            p.error(f"--metrics {args.metrics}: {err}")
        metrics = data.get("metrics", data) if isinstance(data, dict) else None
        if not isinstance(metrics, dict):
            p.error(f"--metrics {args.metrics} holds no metrics object (write it with "
                    "`diffplat evaluate --json`)")
        # how they were sampled (evaluate --json records it), so a check can repeat it
        how = {k: data[k] for k in MEASURED_WITH if data.get(k) not in (None, {}, [])}
        if how:
            extra["measured_with"] = how
    module = load_model(args.ckpt)
    for option, path in assets.items():
        if not hasattr(module.domain, option):
            p.error(f"--asset {option}=...: the {module.domain.name} domain has no option "
                    f"{option!r}")
        setattr(module.domain, option, path)
        if option not in module.domain.assets():
            p.error(f"--asset {option}=...: the {module.domain.name} domain's evaluation does "
                    f"not read {option!r} (its assets: {sorted(module.domain.assets())})")
    with staged(args.out, args.overwrite, what="the export") as tmp:
        if extra or metrics:
            from diffplat.api import Pipeline

            paths = Pipeline(module, args.ckpt).save(tmp, metrics=metrics, **extra)
        else:
            from diffplat.store import export

            paths = export(module, tmp)
        steps = export_step_schedules(args.ckpt, tmp)
        if steps is not None:
            paths.append(steps)
    print("wrote " + ", ".join(str(Path(args.out) / Path(x).relative_to(tmp)) for x in paths))
    return 0
