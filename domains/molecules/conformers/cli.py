"""``diffplat conformers`` and ``diffplat evaluate conformers`` (the core's CLI dispatches
here lazily, so the core never imports RDKit)."""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

BASELINES = ("rdkit",)


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", help="a conformer model checkpoint (.ckpt or export folder)")
    p.add_argument("--model", help="the name of a conformer model shipped with diffplat "
                                   "(models/; instead of --ckpt)")
    p.add_argument("--baseline", choices=BASELINES,
                   help="use RDKit's ETKDGv3 instead of (or, for evaluate, beside) a model")
    p.add_argument("--mmff", action="store_true",
                   help="with --baseline rdkit or --refine-from etkdg: relax each ETKDG "
                        "conformer with MMFF94")
    p.add_argument("--sampler", default=None, help="core sampler (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the "
                                                           "model's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-atoms", type=int, default=20000,
                   help="atoms per sampler batch (default 20000)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--refine-from", choices=("etkdg",), default=None,
                   help="with --ckpt: start the reverse process from each ETKDG conformer "
                        "(with --mmff if given) noised to --noise-level (SDEdit); ETKDG's "
                        "time is counted in the model's")
    p.add_argument("--noise-level", type=float, default=None, metavar="T",
                   help="with --refine-from: schedule time in (0, 1] of the start (1: from "
                        "the top, as ordinary sampling)")


def _resolve_model(p: argparse.ArgumentParser, args) -> None:
    if args.model:  # a shipped model's export folder stands in for --ckpt
        if args.ckpt:
            p.error("give --ckpt or --model, not both")
        from diffplat.models import find_model

        try:
            args.ckpt = str(find_model(args.model))
        except FileNotFoundError as err:
            p.error(str(err))


def _check_refine(p: argparse.ArgumentParser, args) -> None:
    if args.refine_from and not args.ckpt:
        p.error("--refine-from needs --ckpt (a model to refine with)")
    if (args.refine_from is None) != (args.noise_level is None):
        p.error("give --refine-from and --noise-level together")
    if args.noise_level is not None and not 0 < args.noise_level <= 1:
        p.error(f"--noise-level must be in (0, 1], got {args.noise_level}")


def _check_refiner(p: argparse.ArgumentParser, args, module) -> None:
    """A model trained on t <= max_t only (``t_options: {high: ...}``) refines and does not
    generate: say so before any work is done."""
    max_t = float(getattr(module.ema_denoiser, "max_t", 1.0))
    if max_t >= 1.0:
        return
    if not args.refine_from:
        p.error(f"{args.ckpt} is a refiner (trained on t <= {max_t} only): give "
                f"--refine-from etkdg --noise-level T with T <= {max_t}")
    if args.noise_level > max_t:
        p.error(f"--noise-level {args.noise_level} is above the t <= {max_t} that "
                f"{args.ckpt} was trained on")


def _device(args) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _load(ckpt: str, device: str):
    from diffplat.training.checkpoint import load_module
    from domains.molecules.conformers.domain import ConformerDomain

    module = load_module(ckpt, map_location=device).to(device)
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
    p.add_argument("--smiles", action="append", default=[], metavar="SMILES",
                   help="an input molecule (repeatable); hydrogens are added if absent")
    p.add_argument("--sdf", help="an SDF file of input molecules (one per record)")
    p.add_argument("-n", "--num", type=int, default=10, help="conformers per molecule")
    p.add_argument("--out", required=True, help="output SDF file")
    args = p.parse_args(argv)
    _resolve_model(p, args)
    if bool(args.ckpt) == bool(args.baseline):
        p.error("give exactly one of --ckpt or --baseline rdkit")
    if args.num < 1:
        p.error(f"-n must be >= 1, got {args.num}")
    _check_refine(p, args)
    from domains.molecules.conformers.baseline import rdkit_conformers
    from domains.molecules.conformers.io import input_graphs, read_inputs, write_conformers

    inputs = read_inputs(args.smiles, args.sdf)
    results: dict[int, list] = {}
    etkdg_seconds = 0.0  # refinement: the ETKDG starts' embedding time, counted in seconds
    if args.ckpt:
        device = _device(args)
        module = _load(args.ckpt, device)
        _check_refiner(p, args, module)
        graphs, failures = input_graphs(inputs, module.domain.vocabulary)
        starts = None
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
    for k, name, reason in sorted(failures):
        print(f"diffplat conformers: molecule {k + 1} ({name}): {reason}", file=sys.stderr)
    if failures:
        print(f"diffplat conformers: {len(failures)} of {len(inputs)} molecule(s) failed",
              file=sys.stderr)
        return 1
    return 0


def _domain_from_config(path: str):
    from diffplat.cli.evaluate import _domain_from_config as load

    return load(Path(path))


COLUMNS = [("cov_r_mean", "COV-R mean (%)"), ("cov_r_median", "COV-R median (%)"),
           ("mat_r_mean", "MAT-R mean (A)"), ("mat_r_median", "MAT-R median (A)"),
           ("cov_p_mean", "COV-P mean (%)"), ("cov_p_median", "COV-P median (%)"),
           ("mat_p_mean", "MAT-P mean (A)"), ("mat_p_median", "MAT-P median (A)"),
           ("stereo_match", "stereo match (%)"), ("ms_per_conformer", "ms / conformer"),
           ("molecules", "molecules scored"), ("failed", "failed"), ("scoring", "scoring")]
SCORING_CHOICES = ("both", "td", "legacy")


def paired_line(p: dict[str, Any]) -> str:
    """One line: the model minus the baseline on the same molecules, with 95% intervals."""
    def part(key: str, unit: str, fmt: str) -> str:
        if f"{key}_diff" not in p:
            return f"{key.upper().replace('_', '-')}: no pair"
        return (f"{key.upper().replace('_', '-')} {p[f'{key}_diff']:+{fmt}}{unit} "
                f"(95% CI {p[f'{key}_ci_low']:+{fmt}} to {p[f'{key}_ci_high']:+{fmt}}; better "
                f"on {p[f'{key}_better']:.0f}, worse on {p[f'{key}_worse']:.0f} of "
                f"{p[f'{key}_pairs']:.0f})")
    return (f"paired, {p['model']} minus {p['baseline']} on the same {p['molecules']:.0f} "
            f"molecules (td): {part('cov_r', ' pts', '.1f')}; {part('mat_r', ' A', '.3f')}")


def write_per_molecule(path: Path, order: list[int], mols: list,
                       per_mol: dict[str, list]) -> None:
    """per_molecule.csv: each molecule's COV-R (fraction) and MAT-R (A) per method, td scoring
    (a failed molecule: COV-R 0 and an empty MAT-R)."""
    import csv

    from rdkit import Chem

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "smiles"] + [f"{name} {k}" for name in per_mol
                                          for k in ("cov_r", "mat_r")])
        for j, (i, mol) in enumerate(zip(order, mols)):
            vals = []
            for name in per_mol:
                m = per_mol[name][j]
                vals += [f"{m['cov_r']:.6g}",
                         "" if math.isnan(m["mat_r"]) else f"{m['mat_r']:.6g}"]
            w.writerow([i, Chem.MolToSmiles(Chem.RemoveHs(mol))] + vals)


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """The metrics rows as a markdown table (one row per method)."""
    head = "| method | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        cells = []
        for key, _ in COLUMNS:
            v = row.get(key)
            cells.append(f"{v:.3f}" if isinstance(v, float) and key.startswith("mat") else
                         f"{v:.1f}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="diffplat evaluate conformers",
        description="COV-R/MAT-R/COV-P/MAT-P (mean and median, heavy-atom symmetry-aware "
                    "RMSD) and stereo agreement on a split's molecules, 2K conformers for K "
                    "references, for a model (--ckpt) and/or RDKit ETKDG (--baseline rdkit) "
                    "on the same molecules. Scoring 'td' is Torsional Diffusion's "
                    "evaluate_confs.py (a molecule without conformers counts 0 coverage, "
                    "RMSD < delta, stereo-defining H kept); 'legacy' is diffplat's earlier "
                    "one (<= delta, failures left out). Prints the table and writes "
                    "metrics.json and metrics.md to --out.")
    _add_generation_args(p)
    p.add_argument("--config", "-c", help="without --ckpt: take the data from this config")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--num-mols", type=int, default=200, help="molecules (default 200)")
    p.add_argument("--delta", type=float, default=None,
                   help="coverage threshold in A (default: the domain's, 0.5 for QM9)")
    p.add_argument("--scoring", choices=SCORING_CHOICES, default="both",
                   help="td (Torsional Diffusion's), legacy (diffplat's before issue #16), or "
                        "both rows, td first (default both)")
    p.add_argument("--out", default="conformer-eval", help="output folder")
    args = p.parse_args(argv)
    _resolve_model(p, args)
    if not args.ckpt and not args.baseline:
        p.error("give --ckpt and/or --baseline rdkit")
    _check_refine(p, args)
    if not args.ckpt and not args.config:
        p.error("--baseline without --ckpt needs --config (which data to evaluate on)")
    device = _device(args)
    module = _load(args.ckpt, device) if args.ckpt else None
    if module is not None:
        _check_refiner(p, args, module)
    domain = module.domain if module else _domain_from_config(args.config)
    split = "val" if args.split == "valid" else args.split
    order = domain.order(split)[: args.num_mols]
    graphs = [domain.graphs(split)[i] for i in order]
    delta = args.delta if args.delta is not None else domain.delta
    from domains.molecules.conformers.metrics import ensemble_metrics

    mols = [g.mol for g in graphs]
    refs = [g.conformers for g in graphs]
    made: dict[str, tuple[list, float]] = {}  # method -> (conformers per molecule, seconds)
    baseline = None  # the baseline row's name, when there is one
    etkdg = None  # (conformers per molecule, seconds), shared by the baseline and refinement
    if args.baseline or args.refine_from:
        from domains.molecules.conformers.baseline import rdkit_conformers

        t0 = time.perf_counter()
        etkdg = ([rdkit_conformers(m, 2 * len(r), args.mmff, args.seed)
                  for m, r in zip(mols, refs)], time.perf_counter() - t0)
    if module is not None:
        from domains.molecules.conformers.sample import model_conformers

        starts = etkdg[0] if args.refine_from else None
        gens: list = [[] for _ in graphs]  # refinement: no ETKDG start, no conformer
        t0 = time.perf_counter()
        for k in sorted({len(r) for r in refs}):  # 2K conformers for K references
            idx = [i for i, r in enumerate(refs) if len(r) == k and (starts is None or
                                                                   len(starts[i]))]
            if not idx:
                continue
            out = model_conformers(module, [graphs[i] for i in idx], 2 * k, args.sampler,
                                   args.steps, args.seed, args.max_atoms, device,
                                   starts=[starts[i] for i in idx] if starts else None,
                                   start_t=args.noise_level)
            for i, c in zip(idx, out):
                gens[i] = c
        steps = args.steps or module.hparams.sample_steps
        name = f"model ({args.sampler or module.hparams.sampler}, {steps} steps)"
        seconds = time.perf_counter() - t0
        if args.refine_from:  # ETKDG's own time is part of the refined method's
            name = name[:-1] + f", from ETKDG{' + MMFF' if args.mmff else ''} at " \
                               f"t = {args.noise_level})"
            seconds += etkdg[1]
        made[name] = (gens, seconds)
    if args.baseline:
        baseline = "RDKit ETKDGv3" + (" + MMFF" if args.mmff else "")
        made[baseline] = etkdg
    scorings = ("td", "legacy") if args.scoring == "both" else (args.scoring,)
    # td: every molecule, a method's failures count zero coverage (TD's evaluate_confs.py);
    # legacy: like with like on the molecules every method produced conformers for
    common = [i for i in range(len(graphs)) if all(len(g[i]) for g, _ in made.values())]
    scored = {"td": list(range(len(graphs))), "legacy": common}
    rows: dict[str, dict[str, Any]] = {}
    per_mol: dict[str, list] = {}  # td scoring: each method's per-molecule values
    for scoring in scorings:
        for name, (gens, seconds) in made.items():
            idx = scored[scoring]
            keep = per_mol.setdefault(name, []) if scoring == "td" else None
            row = ensemble_metrics([mols[i] for i in idx], [refs[i] for i in idx],
                                   [gens[i] for i in idx], delta, scoring, keep)
            row["failed"] = sum(1 for g in gens if not len(g))
            row["ms_per_conformer"] = 1000 * seconds / max(sum(len(g) for g in gens), 1)
            rows[name if scoring == "td" else f"{name} [legacy]"] = row
    table = markdown_table(rows)
    how = {"td": f"td on all {len(graphs)} (no conformer: 0 coverage; RMSD < delta)",
           "legacy": f"legacy on the {len(common)} every method handled (RMSD <= delta)"}
    print(f"conformers: {len(graphs)} {split} molecules, delta {delta} A, device {device}; "
          f"scoring {'; '.join(how[s] for s in scorings)}")
    print(table)
    paired = None
    if len(per_mol) == 2 and module is not None:  # the model against the baseline
        from domains.molecules.conformers.metrics import paired_difference

        (model_name, model_vals), (base_name, base_vals) = per_mol.items()
        paired = {"model": model_name, "baseline": base_name,
                  **paired_difference(model_vals, base_vals, seed=args.seed)}
        print(paired_line(paired))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if per_mol:
        write_per_molecule(out / "per_molecule.csv", order, mols, per_mol)
    # the headline figures, flat (what `diffplat export --metrics` puts on a model card):
    # the first scoring's rows, prefixed model_ / baseline_, and the paired differences
    headline: dict[str, float] = {"num_mols": float(len(graphs))}
    for name in made:
        row = rows[name if scorings[0] == "td" else f"{name} [legacy]"]
        prefix = "baseline_" if name == baseline else "model_"
        headline.update({prefix + k: float(row[k]) for k in
                         ("cov_r_mean", "cov_r_median", "mat_r_mean", "mat_r_median",
                          "cov_p_mean", "mat_p_mean", "failed", "ms_per_conformer")})
    if paired:
        headline.update({f"paired_{k}": float(v) for k, v in paired.items()
                         if k not in ("model", "baseline")})
    sampling = ({"sampler": args.sampler or module.hparams.sampler,
                 "steps": args.steps or module.hparams.sample_steps} if module else {})
    info = {"metrics": headline, **sampling, "rows": rows, "scoring": list(scorings),
            "split": split, "num_mols": len(graphs),
            "scored": {k: len(scored[k]) for k in scorings}, "delta": delta, "paired": paired,
            "refine": ({"from": args.refine_from, "t": args.noise_level, "mmff": args.mmff,
                        "etkdg_seconds": etkdg[1]} if args.refine_from else None),
            "ckpt": args.ckpt, "device": device, "cpu": platform.processor() or
            platform.machine(), "skipped_graphs": domain.skipped,
            "date": time.strftime("%Y-%m-%d")}
    (out / "metrics.json").write_text(json.dumps(info, indent=2, default=str))
    (out / "metrics.md").write_text(table + "\n")
    print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}")
    return 0
