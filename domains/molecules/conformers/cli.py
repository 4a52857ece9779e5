"""``diffplat conformers`` and ``diffplat evaluate conformers`` (the core's CLI dispatches
here lazily, so the core never imports RDKit)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from diffplat.checks import positive_int
from diffplat.cli.plugin import add_option_flags, check_option_flags, read_card
from domains.molecules.conformers.options import SAMPLING_OPTIONS

BASELINES = ("rdkit",)
#: The domain's sampling options that both conformer commands take as flags.
REFINE = ("refine_from", "noise_level", "mmff")
REFINE_HELP = {
    "refine_from": "etkdg, with --ckpt: start the reverse process from each ETKDG conformer "
                   "(with --mmff if given) noised to --noise-level (SDEdit); ETKDG's time is "
                   "counted in the model's",
    "noise_level": "with --refine-from: schedule time in (0, 1] of the start (1: from the "
                   "top, as ordinary sampling); default: the model card's",
    "mmff": "with --baseline rdkit or --refine-from etkdg: relax each ETKDG conformer with "
            "MMFF94"}


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", help="a conformer model checkpoint (.ckpt or export folder)")
    p.add_argument("--model", help="the name of a conformer model shipped with diffplat "
                                   "(models/; instead of --ckpt)")
    p.add_argument("--baseline", choices=BASELINES,
                   help="use RDKit's ETKDGv3 instead of (or, for evaluate, beside) a model")
    p.add_argument("--sampler", default=None, help="core sampler (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the "
                                                           "model's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-atoms", type=int, default=20000,
                   help="atoms per sampler batch (default 20000)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    # the refinement flags are the domain's declared sampling options (options.py)
    add_option_flags(p, SAMPLING_OPTIONS, REFINE, helps=REFINE_HELP)


def _resolve_model(p: argparse.ArgumentParser, args) -> None:
    if args.model:  # a shipped model's export folder stands in for --ckpt
        if args.ckpt:
            p.error("give --ckpt or --model, not both")
        from diffplat.models import find_model

        try:
            args.ckpt = str(find_model(args.model))
        except FileNotFoundError as err:
            p.error(str(err))


def _check_refine(p: argparse.ArgumentParser, args, module=None) -> None:
    """The refinement flags under the domain's one rule (refine.py's ``refine_settings``,
    as ``Pipeline.sample`` applies it): a model to refine with, the noise level of its card
    when none is given, and a refiner (trained on t <= max_t < 1 only) refused without a
    start or above its range; before any work. One line and exit status 2 when refused."""
    from domains.molecules.conformers.refine import refine_settings

    check_option_flags(p, args, SAMPLING_OPTIONS, REFINE)
    args.mmff = bool(args.mmff)
    if args.refine_from and not args.ckpt:
        p.error("--refine-from needs --ckpt (a model to refine with)")
    options = {"refine_from": args.refine_from, "noise_level": args.noise_level,
               "mmff": args.mmff}
    max_t = 1.0 if module is None else float(module.ema_denoiser.max_t)
    card = read_card(args.ckpt) if args.ckpt else None
    try:
        start, t, mmff, from_card = refine_settings(options, max_t, card,
                                                    model=args.ckpt or "--baseline", cli=True)
    except ValueError as err:
        p.error(str(err))
    if start is not None:
        args.noise_level, args.mmff = t, mmff
        if from_card:
            print(f"noise level {t:g}{' with --mmff' if mmff else ''} from the model card of "
                  f"{args.model or args.ckpt}")


def _device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _load(ckpt: str, device: str):
    from diffplat.store import load_model
    from domains.molecules.conformers.domain import ConformerDomain

    module = load_model(ckpt, map_location=device).to(device)
    if not isinstance(module.domain, ConformerDomain):
        raise ValueError(f"{ckpt} is a {module.domain.name!r} model, not a conformer model")
    if module.domain.vocabulary is None:  # SDF-trained without `elements`: read the data
        module.domain.setup()
    return module


def conformers_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="diffplat conformers",
        description="Generate conformers of given molecules (SMILES and/or SDF records) with "
                    "a trained model (--ckpt) or RDKit's ETKDG (--baseline rdkit), written to "
                    "one multi-conformer SDF in the input's atom order with hydrogens. "
                    "Molecules that fail are reported with the reason; the others are still "
                    "written, and the exit status is 1.")
    _add_generation_args(p)
    add_option_flags(p, SAMPLING_OPTIONS, ("smiles",), helps={
        "smiles": "an input molecule (repeatable); hydrogens are added if absent"})
    p.add_argument("--sdf", help="an SDF file of input molecules (one per record)")
    p.add_argument("-n", "--num", type=int, default=10, help="conformers per molecule")
    p.add_argument("--out", required=True, help="output SDF file")
    p.add_argument("--allow-out-of-range", action="store_true",
                   help="run molecules outside the model's training range (atoms, elements, "
                        "rings...) with a warning instead of refusing them")
    p.add_argument("--report", action="store_true",
                   help="print each molecule's MMFF94 energy (median over its conformers) "
                        "and bond-length error against the MMFF-minimised geometry, and, "
                        "when refining, the same for the ETKDG starts")
    args = p.parse_args(argv)
    _resolve_model(p, args)
    if bool(args.ckpt) == bool(args.baseline):
        p.error("give exactly one of --ckpt or --baseline rdkit")
    if args.allow_out_of_range and not args.ckpt:
        p.error("--allow-out-of-range applies to a model (--ckpt or --model)")
    check_option_flags(p, args, SAMPLING_OPTIONS, ("smiles",))
    args.smiles = args.smiles or []
    try:
        positive_int(args.num, "-n")
    except ValueError as err:
        p.error(str(err))
    _check_refine(p, args)
    from domains.molecules.conformers.baseline import rdkit_conformers
    from domains.molecules.conformers.io import input_graphs, read_inputs, write_conformers

    inputs = read_inputs(args.smiles, args.sdf)
    results: dict[int, list] = {}
    starts: dict[int, list] | None = None  # refinement: the ETKDG starts per molecule
    etkdg_seconds = 0.0  # refinement: the ETKDG starts' embedding time, counted in seconds
    if args.ckpt:
        device = _device(args)
        module = _load(args.ckpt, device)
        _check_refine(p, args, module)
        graphs, failures = input_graphs(inputs, module.domain.vocabulary)
        _check_range(graphs, failures, module.domain.training_range(),
                     args.model or args.ckpt, args.allow_out_of_range)
        if args.refine_from:
            t0 = time.perf_counter()
            starts = {k: rdkit_conformers(inputs[k].mol, args.num, args.mmff, args.seed)
                      for k in graphs}
            etkdg_seconds = time.perf_counter() - t0
            for k in [k for k in graphs if not starts[k]]:
                failures.append((k, inputs[k].name, "RDKit could not embed this molecule "
                                                    "(no ETKDG start to refine)"))
                del graphs[k]
        from domains.molecules.conformers.sample import model_conformers

        t0 = time.perf_counter()
        confs = model_conformers(module, list(graphs.values()), args.num, args.sampler,
                                 args.steps, args.seed, args.max_atoms, device,
                                 starts=None if starts is None else [starts[k] for k in graphs],
                                 start_t=args.noise_level)
        results = dict(zip(graphs, confs))
        how = f"model {args.ckpt} on {device}"
        if args.refine_from:
            how += (f", refined from ETKDG{' + MMFF' if args.mmff else ''} at "
                    f"t = {args.noise_level}, ETKDG's {etkdg_seconds:.2f} s included")
    else:
        failures = [(k, m.name, m.error) for k, m in enumerate(inputs) if m.error]
        t0 = time.perf_counter()
        for k, m in enumerate(inputs):
            if m.error:
                continue
            confs = rdkit_conformers(m.mol, args.num, args.mmff, args.seed)
            if confs:
                results[k] = confs
            else:
                failures.append((k, m.name, "RDKit could not embed this molecule"))
        how = "RDKit ETKDGv3" + (" + MMFF94" if args.mmff else "")
    seconds = time.perf_counter() - t0 + etkdg_seconds
    written = sorted(results)
    n_confs = sum(len(results[k]) for k in written)
    if written:
        write_conformers(args.out, [(inputs[k].mol, inputs[k].name, results[k])
                                    for k in written])
        print(f"wrote {n_confs} conformers of {len(written)} molecule(s) to {args.out} "
              f"({how}; {seconds:.2f} s, {1000 * seconds / max(n_confs, 1):.1f} ms per "
              "conformer)")
    if args.report and written:
        _report(inputs, results, written, starts)
    for k, name, reason in sorted(failures):
        if reason is not None:  # None: refused for its range, said before the run
            print(f"diffplat conformers: molecule {k + 1} ({name}): {reason}",
                  file=sys.stderr)
    if failures:
        print(f"diffplat conformers: {len(failures)} of {len(inputs)} molecule(s) failed",
              file=sys.stderr)
        return 1
    return 0


def _check_range(graphs: dict, failures: list, rng: dict[str, Any] | None, model: str,
                 allow: bool) -> None:
    """Before any work: refuse each molecule outside the model's training range in one line
    (it joins ``failures``; the others still run), or with ``allow`` warn and keep it."""
    from domains.molecules.conformers.scope import out_of_range, range_message

    if rng is None:
        print(f"diffplat conformers: warning: {model} stores no training range (saved before "
              "diffplat kept one, not trained on QM9): its inputs cannot be checked",
              file=sys.stderr)
        return
    for k in list(graphs):
        reasons = out_of_range(graphs[k].mol, rng)
        if not reasons:
            continue
        line = range_message(f"molecule {k + 1} ({graphs[k].name})", reasons, model)
        if allow:
            print(f"diffplat conformers: warning: {line}; going on (--allow-out-of-range)",
                  file=sys.stderr)
            continue
        print(f"diffplat conformers: error: {line}; refused (--allow-out-of-range runs it "
              "anyway)", file=sys.stderr)
        failures.append((k, graphs.pop(k).name, None))


def _report(inputs: list, results: dict, written: list[int], starts: dict | None) -> None:
    """``--report``: per molecule, MMFF94 energy and bond-length error of what was written
    (and of the ETKDG starts it was refined from)."""
    from domains.molecules.conformers.quality import molecule_quality

    def text(q: dict[str, float]) -> str:
        if math.isnan(q["energy"]):
            return "no MMFF94 parameters"
        return (f"MMFF94 energy median {q['energy']:.1f} kcal/mol, bond-length error "
                f"{q['bond_error']:.3f} A")

    for k in written:
        mol = inputs[k].mol
        line = f"molecule {k + 1} ({inputs[k].name}): {text(molecule_quality(mol, results[k]))}"
        if starts is not None:
            line += f"; its ETKDG starts: {text(molecule_quality(mol, starts[k]))}"
        print(line)


def evaluate_main(argv: list[str]) -> int:
    """``diffplat evaluate conformers`` (evaluate.py)."""
    from domains.molecules.conformers.evaluate import evaluate_main as run

    return run(argv)
