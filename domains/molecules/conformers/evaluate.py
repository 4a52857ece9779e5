"""``diffplat evaluate conformers``: COV/MAT, stereo agreement, MMFF94 energy and bond-length
error of a model and/or RDKit's ETKDG on a split's molecules (docs/conformers.md)."""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

from domains.molecules.conformers.cli import (
    _add_generation_args,
    _check_refine,
    _device,
    _load,
    _resolve_model,
)


def _domain_from_config(path: str):
    from diffplat.cli.plugin import domain_from_config as load

    return load(Path(path))


COLUMNS = [("cov_r_mean", "COV-R mean (%)"), ("cov_r_median", "COV-R median (%)"),
           ("mat_r_mean", "MAT-R mean (A)"), ("mat_r_median", "MAT-R median (A)"),
           ("cov_p_mean", "COV-P mean (%)"), ("cov_p_median", "COV-P median (%)"),
           ("mat_p_mean", "MAT-P mean (A)"), ("mat_p_median", "MAT-P median (A)"),
           ("stereo_match", "stereo match (%)"),
           ("mmff_energy_median", "MMFF94 energy median (kcal/mol)"),
           ("bond_error_mean", "bond error vs MMFF min (A)"),
           ("ms_per_conformer", "ms / conformer"),
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
                       per_mol: dict[str, list], quality: dict[str, list]) -> None:
    """per_molecule.csv: each molecule's COV-R (fraction) and MAT-R (A) per method, td scoring
    (a failed molecule: COV-R 0 and an empty MAT-R), and its MMFF94 energy (kcal/mol) and
    bond-length error (A) per method (empty without conformers or MMFF parameters)."""
    import csv

    from rdkit import Chem

    keys = ("cov_r", "mat_r", "energy", "bond_error")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "smiles"] + [f"{name} {k}" for name in per_mol for k in keys])
        for j, (i, mol) in enumerate(zip(order, mols)):
            vals = []
            for name in per_mol:
                m = {**per_mol[name][j], **quality[name][j]}
                vals += [f"{m['cov_r']:.6g}"] + ["" if math.isnan(m[k]) else f"{m[k]:.6g}"
                                                 for k in keys[1:]]
            w.writerow([i, Chem.MolToSmiles(Chem.RemoveHs(mol))] + vals)


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """The metrics rows as a markdown table (one row per method)."""
    head = "| method | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        cells = []
        for key, _ in COLUMNS:
            v = row.get(key)
            cells.append(f"{v:.3f}" if isinstance(v, float) and key.startswith(("mat", "bond"))
                         else
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
        _check_refine(p, args, module)
    domain = module.domain if module else _domain_from_config(args.config)
    split = "val" if args.split == "valid" else args.split
    order = domain.order(split)[: args.num_mols]
    graphs = [domain.graphs(split)[i] for i in order]
    delta = args.delta if args.delta is not None else domain.delta
    from domains.molecules.conformers.metrics import ensemble_metrics
    from domains.molecules.conformers.quality import (
        molecule_quality,
        paired_quality,
        paired_quality_line,
        summarise,
    )

    outside = None  # how many of the molecules lie outside the model's training range
    if module is not None:
        from domains.molecules.conformers.scope import out_of_range

        rng = domain.training_range()
        outside = sum(bool(out_of_range(g.mol, rng)) for g in graphs) if rng else None
        if outside:
            print(f"diffplat evaluate conformers: warning: {outside} of the {len(graphs)} "
                  f"{split} molecules lie outside {args.model or args.ckpt}'s training range "
                  "(scored anyway; `diffplat conformers` names what)", file=sys.stderr)

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
    # MMFF94 energy and bond-length error of every molecule's conformers, per method
    quality = {name: [molecule_quality(m, g) for m, g in zip(mols, gens)]
               for name, (gens, _) in made.items()}
    rows: dict[str, dict[str, Any]] = {}
    per_mol: dict[str, list] = {}  # td scoring: each method's per-molecule values
    for scoring in scorings:
        for name, (gens, seconds) in made.items():
            idx = scored[scoring]
            keep = per_mol.setdefault(name, []) if scoring == "td" else None
            row = ensemble_metrics([mols[i] for i in idx], [refs[i] for i in idx],
                                   [gens[i] for i in idx], delta, scoring, keep)
            row["failed"] = sum(1 for g in gens if not len(g))
            row.update(summarise([quality[name][i] for i in idx]))
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
        pq = paired_quality(quality[model_name], quality[base_name])
        paired.update(pq)
        print(paired_quality_line(pq, model_name, base_name))
    ref_quality = summarise([molecule_quality(m, r) for m, r in zip(mols, refs)])
    print(f"references ({len(graphs)} molecules): MMFF94 energy median "
          f"{ref_quality['mmff_energy_median']:.1f} kcal/mol, bond-length error "
          f"{ref_quality['bond_error_mean']:.3f} A (what a model that matches them scores)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if per_mol:
        write_per_molecule(out / "per_molecule.csv", order, mols, per_mol, quality)
    # the headline figures, flat (what `diffplat export --metrics` puts on a model card):
    # the first scoring's rows, prefixed model_ / baseline_, and the paired differences
    headline: dict[str, float] = {"num_mols": float(len(graphs))}
    for name in made:
        row = rows[name if scorings[0] == "td" else f"{name} [legacy]"]
        prefix = "baseline_" if name == baseline else "model_"
        headline.update({prefix + k: float(row[k]) for k in
                         ("cov_r_mean", "cov_r_median", "mat_r_mean", "mat_r_median",
                          "cov_p_mean", "mat_p_mean", "mmff_energy_median",
                          "bond_error_mean", "failed", "ms_per_conformer")})
    if paired:
        headline.update({f"paired_{k}": float(v) for k, v in paired.items()
                         if k not in ("model", "baseline")})
    sampling = ({"sampler": args.sampler or module.hparams.sampler,
                 "steps": args.steps or module.hparams.sample_steps} if module else {})
    info = {"metrics": headline, **sampling, "rows": rows, "scoring": list(scorings),
            "split": split, "num_mols": len(graphs),
            "scored": {k: len(scored[k]) for k in scorings}, "delta": delta, "paired": paired,
            "reference_quality": ref_quality, "out_of_range": outside,
            "refine": ({"from": args.refine_from, "t": args.noise_level, "mmff": args.mmff,
                        "etkdg_seconds": etkdg[1]} if args.refine_from else None),
            "ckpt": args.ckpt, "device": device, "cpu": platform.processor() or
            platform.machine(), "skipped_graphs": domain.skipped,
            "date": time.strftime("%Y-%m-%d")}
    (out / "metrics.json").write_text(json.dumps(info, indent=2, default=str))
    (out / "metrics.md").write_text(table + "\n")
    print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}")
    return 0
