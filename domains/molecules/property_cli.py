"""``diffplat evaluate property``: EDM's property-MAE table for a conditional molecule model.

    diffplat evaluate property --ckpt GEN --predictor PRED --num 1000 --nfe 50 --json out.json
    diffplat evaluate property --samples DIR --predictor PRED      # molecules already drawn

Generates ``--num`` molecules with the (size, property) pairs the model's domain draws from
its training molecules (EDM's second half), predicts their property with the predictor
(trained on the first half), and prints the MAE beside EDM's reference rows on the second
half (domains/molecules/property.py) and the published ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: EDM's Table 3 (Hoogeboom et al. 2022), alpha in Bohr^3 and the gap in meV
PUBLISHED = {"alpha": {"Naive (upper bound)": 9.01, "#Atoms": 3.86, "EDM": 2.76,
                       "GeoLDM": 2.37, "QM9 (lower bound)": 0.10},
             "gap_ev": {"Naive (upper bound)": 1.470, "#Atoms": 0.866, "EDM": 0.655,
                        "GeoLDM": 0.587, "QM9 (lower bound)": 0.064}}


def main(argv: list[str]) -> int:
    from diffplat.cli.plugin import add_sampling_args, generate

    p = argparse.ArgumentParser(
        prog="diffplat evaluate property",
        description="EDM's property-MAE protocol: the MAE between the property a conditional "
                    "model was asked for and the property a predictor (trained on the other "
                    "half of QM9's training split) finds in the generated molecules, beside "
                    "the Naive, #Atoms and QM9 reference rows.")
    add_sampling_args(p, required=False)
    p.add_argument("--samples", help="a folder written by `diffplat sample` from a "
                                     "conditional model (properties.json beside the SDF)")
    p.add_argument("--predictor",
                   help="a PropertyPredictor checkpoint (configs/molecules/qm9-*-predictor.yaml);"
                        " default: the one the model names (a shipped model's assets/)")
    p.add_argument("--data", default="data/qm9/qm9.npz", help="the QM9 cache")
    p.add_argument("--reference-num", type=int, default=None,
                   help="second-half molecules for the reference rows (default all 50,000)")
    p.add_argument("--json", help="write the table to this JSON file")
    args = p.parse_args(argv)

    from domains.molecules.property import (
        load_predictor,
        num_atoms_medians,
        paired_against_num_atoms,
        predict,
        reference_rows,
    )
    from domains.molecules.qm9 import load_qm9

    if not args.samples and not (args.ckpt or args.model or args.config):
        p.error("give the generator (--ckpt, --model or -c) or --samples")
    if args.samples:
        from diffplat.cli.plugin import domain_from_samples

        domain = domain_from_samples(Path(args.samples))
    else:
        from diffplat.cli.plugin import model_source
        from diffplat.store import load_model

        domain = load_model(model_source(args)).domain
    predictor_path = args.predictor or getattr(domain, "property_predictor", None)
    if not predictor_path:
        p.error("give --predictor (the model names no property_predictor)")
    predictor = load_predictor(predictor_path)
    prop = predictor.hparams.property
    stats: dict = {}
    if args.samples:
        molecules = domain.read(Path(args.samples))
        source = args.samples
    else:
        if prop not in domain.context:
            raise ValueError(f"the generator conditions on {domain.context}, the "
                             f"predictor predicts {prop!r}")
        module, molecules, stats = generate(args)
        source = stats["source"]
    asked = np.array([m.properties.get(prop, np.nan) for m in molecules], dtype=np.float64)
    if np.isnan(asked).any():
        raise ValueError(f"{int(np.isnan(asked).sum())} molecules carry no asked {prop!r}: "
                         "they did not come from a model conditioned on it")
    found = predict(predictor, molecules)
    mae = float(np.abs(found - asked).mean())
    cache = load_qm9(Path(args.data))
    ref = reference_rows(predictor, cache, prop, args.reference_num)
    counts = np.array([len(m.symbols) for m in molecules])
    paired = paired_against_num_atoms(found, asked, counts, num_atoms_medians(cache, prop),
                                      seed=args.seed)
    rows = {"Naive (upper bound)": ref["naive_upper_bound"], "#Atoms": ref["num_atoms"],
            "this model": mae, "QM9 (lower bound)": ref["qm9_lower_bound"]}
    unit = {"alpha": "Bohr^3", "gap_ev": "eV", "gap_au": "Hartree"}[prop]
    print(f"property MAE ({prop}, {unit}): {len(molecules)} generated molecules from {source}; "
          f"reference rows on {ref['molecules']} second-half molecules")
    published = PUBLISHED.get(prop, {})
    print(f"  {'row':<22} {'measured':>10} {'published':>10}")
    for name, value in rows.items():
        pub = published.get(name, published.get("EDM") if name == "this model" else None)
        tag = "EDM" if name == "this model" else ""
        pub_s = f"{pub:.3f}{' ' + tag if tag else ''}" if pub is not None else "-"
        print(f"  {name:<22} {value:>10.3f} {pub_s:>10}")
    print(f"  this model: MAE {mae:.3f} (95% CI {paired['mae_ci_low']:.3f}..."
          f"{paired['mae_ci_high']:.3f}); minus #Atoms on the same molecules (its median "
          f"for each generated size): {paired['diff']:+.3f} (95% CI {paired['diff_ci_low']:+.3f}"
          f"..{paired['diff_ci_high']:+.3f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"property": prop, "unit": unit, "rows": rows, "molecules": len(molecules),
             "reference_molecules": ref["molecules"], "published": published,
             "source": str(source), "predictor": str(predictor_path),
             # the headline a model card keeps (diffplat export --metrics), and how it
             # was sampled
             "metrics": {f"{prop}_mae": mae, f"{prop}_mae_num_atoms": ref["num_atoms"],
                         f"{prop}_mae_naive": ref["naive_upper_bound"],
                         f"{prop}_mae_qm9": ref["qm9_lower_bound"],
                         f"{prop}_mae_ci_low": paired["mae_ci_low"],
                         f"{prop}_mae_ci_high": paired["mae_ci_high"],
                         f"paired_{prop}_num_atoms_diff": paired["diff"],
                         f"paired_{prop}_num_atoms_ci_low": paired["diff_ci_low"],
                         f"paired_{prop}_num_atoms_ci_high": paired["diff_ci_high"],
                         "molecules": len(molecules)},
             **{k: stats[k] for k in ("sampler", "steps", "nfe", "guidance")
                if stats.get(k) is not None}}, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0
