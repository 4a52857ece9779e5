"""diffplat's conformer scoring beside Torsional Diffusion's own ``evaluate_confs.py`` run on
the same conformers (issue #16): COV-R/MAT-R/COV-P/MAT-P mean and median, side by side.

    python benchmarks/conformers_td_scoring.py --td-repo ~/torsional-diffusion \\
        -c configs/molecules/conformers-qm9-tiny.yaml --num-mols 50 [--ckpt CKPT]
    python benchmarks/conformers_td_scoring.py --td-repo ~/torsional-diffusion \\
        --smiles CCO --smiles "CC(O)C#N" --fail-every 3

``--td-repo`` is a clone of gcorso/torsional-diffusion (checked at commit 5f713b4); its
``evaluate_confs.py`` needs only numpy, pandas, RDKit and tqdm, and is run unchanged in a
subprocess with this Python on pickles written in its input format: ``--confs`` (corrected
SMILES -> list of RDKit molecules, one conformer each; a molecule the method failed on is
absent, TD's "model failure"), ``--true_mols`` (SMILES -> reference molecules) and
``--test_csv`` (columns ``smiles``, ``corrected_smiles``, here the same SMILES).

Conformers: with ``-c``, the references of the split's first ``--num-mols`` molecules (the
order of ``diffplat evaluate conformers``) and 2K ETKDGv3 conformers (or the model's with
``--ckpt``); with ``--smiles``, K = ``--refs`` ETKDGv3 + MMFF94 conformers (seed 1000) as
references and 2K plain ETKDGv3 ones (seed 0) as the method. ``--fail-every N`` drops the
conformers of every N-th molecule so that both scorers see model failures. Molecules whose
SMILES repeats an earlier one are left out (TD keys its inputs by SMILES). TD's
``clean_confs`` drops references whose SMILES differs from the molecule's; the script says
how many sets TD compared so that such a drop cannot pass unnoticed.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# TD's printed names -> diffplat's keys (both print coverage in %, AMR = MAT in A)
TD_STATS = {"Recall Coverage": "cov_r", "Recall AMR": "mat_r",
            "Precision Coverage": "cov_p", "Precision AMR": "mat_p"}


def _with_conformer(mol, pos: np.ndarray):
    """A copy of ``mol`` holding the single conformer ``pos`` [n, 3]."""
    from rdkit import Chem

    from domains.molecules.conformers.graph import conformer

    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    m.AddConformer(conformer(pos), assignId=True)
    return m


def write_td_inputs(folder: Path, mols, refs, gens) -> list[str]:
    """TD's three input files in ``folder``; returns the SMILES key of every molecule."""
    import pandas as pd
    from rdkit import Chem

    keys = [Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols]
    true = {k: [_with_conformer(m, p) for p in r] for k, m, r in zip(keys, mols, refs)}
    preds = {k: [_with_conformer(m, p) for p in g]
             for k, m, g in zip(keys, mols, gens) if len(g)}
    pd.DataFrame({"smiles": keys, "corrected_smiles": keys}).to_csv(folder / "test.csv")
    (folder / "true.pkl").write_bytes(pickle.dumps(true))
    (folder / "confs.pkl").write_bytes(pickle.dumps(preds))
    return keys


def run_td(td_repo: Path, folder: Path, delta: float) -> tuple[dict[str, float], str]:
    """Run TD's evaluate_confs.py on ``folder``'s inputs; its figures at threshold ``delta``
    (in diffplat's keys, coverage in %) and its closing summary line."""
    script = td_repo / "evaluate_confs.py"
    if not script.is_file():
        raise FileNotFoundError(f"no evaluate_confs.py in {td_repo} (a torsional-diffusion clone)")
    proc = subprocess.run(
        [sys.executable, str(script), "--confs", "confs.pkl", "--true_mols", "true.pkl",
         "--test_csv", "test.csv", "--dataset", "qm9", "--n_workers", "1"],
        cwd=folder, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"evaluate_confs.py failed: {proc.stderr.strip().splitlines()[-1:]}")
    lines = proc.stdout.splitlines()
    starts = [i for i, s in enumerate(lines) if s.startswith("threshold ")
              and abs(float(s.split()[1]) - delta) < 1e-9]
    if not starts:
        raise ValueError(f"TD evaluates thresholds 0, 0.125, ..., 2.375 A; {delta} is not one")
    out: dict[str, float] = {}
    for line in lines[starts[0] + 1: starts[0] + 5]:
        name, rest = line.split(":", 1)
        key = TD_STATS[name]
        mean, median = (float(part.split("=")[1]) for part in rest.split(","))
        out[f"{key}_mean"], out[f"{key}_median"] = mean, median
    return out, lines[-1]


def conformer_sets(args):
    """(mols, refs, gens, label) of the chosen source."""
    from rdkit import Chem

    from domains.molecules.conformers.baseline import rdkit_conformers

    if args.smiles:
        mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in args.smiles]
        refs = [rdkit_conformers(m, args.refs, mmff=True, seed=1000) for m in mols]
        keep = [i for i, r in enumerate(refs) if r]
        mols, refs = [mols[i] for i in keep], [refs[i] for i in keep]
        gens = [rdkit_conformers(m, 2 * len(r), seed=0) for m, r in zip(mols, refs)]
        return mols, refs, gens, "ETKDGv3 against ETKDGv3 + MMFF94 references", 0.5
    from diffplat.cli.evaluate import _domain_from_config

    domain = _domain_from_config(Path(args.config))
    graphs = [domain.graphs(args.split)[i] for i in domain.order(args.split)[: args.num_mols]]
    mols, refs = [g.mol for g in graphs], [g.conformers for g in graphs]
    if args.ckpt:
        from domains.molecules.conformers.cli import _load
        from domains.molecules.conformers.sample import model_conformers

        module = _load(args.ckpt, "cpu")
        gens = [model_conformers(module, [g], 2 * len(r))[0] for g, r in zip(graphs, refs)]
        label = f"model {args.ckpt}"
    else:
        gens = [rdkit_conformers(m, 2 * len(r)) for m, r in zip(mols, refs)]
        label = "ETKDGv3"
    return mols, refs, gens, f"{label} on {args.split} molecules of {args.config}", domain.delta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--td-repo", required=True, type=Path, help="torsional-diffusion clone")
    p.add_argument("-c", "--config", help="take the molecules and references from this config")
    p.add_argument("--split", default="test")
    p.add_argument("--num-mols", type=int, default=50)
    p.add_argument("--ckpt", help="with -c: score this model's conformers instead of ETKDG's")
    p.add_argument("--smiles", action="append", default=[], help="a molecule (repeatable)")
    p.add_argument("--refs", type=int, default=2, help="with --smiles: K references")
    p.add_argument("--fail-every", type=int, default=0, help="drop every N-th molecule's "
                                                             "conformers (model failures)")
    p.add_argument("--delta", type=float, default=None, help="threshold (default: the data's)")
    args = p.parse_args()
    if bool(args.config) == bool(args.smiles):
        p.error("give exactly one of -c CONFIG or --smiles")
    from rdkit import Chem

    from domains.molecules.conformers.metrics import ensemble_metrics

    mols, refs, gens, label, delta = conformer_sets(args)
    delta = args.delta if args.delta is not None else delta
    seen, keep = set(), []
    for i, m in enumerate(mols):
        key = Chem.MolToSmiles(Chem.RemoveHs(m))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    dropped = len(mols) - len(keep)
    mols, refs, gens = [mols[i] for i in keep], [refs[i] for i in keep], [gens[i] for i in keep]
    if args.fail_every:
        gens = [[] if (k + 1) % args.fail_every == 0 else g for k, g in enumerate(gens)]
    with tempfile.TemporaryDirectory() as tmp:
        write_td_inputs(Path(tmp), mols, refs, gens)
        td, summary = run_td(args.td_repo, Path(tmp), delta)
    ours = ensemble_metrics(mols, refs, gens, delta, "td")
    legacy = ensemble_metrics(mols, refs, gens, delta, "legacy")
    print(f"{label}: {len(mols)} molecules ({dropped} repeated SMILES left out), "
          f"{ours['failed']} without conformers, delta {delta} A")
    print(f"TD evaluate_confs.py: {summary}")
    print("| metric | diffplat td | TD evaluate_confs.py | |difference| | diffplat legacy |")
    print("|---|---:|---:|---:|---:|")
    for key in td:
        print(f"| {key} | {ours[key]:.4f} | {td[key]:.4f} | {abs(ours[key] - td[key]):.4f} | "
              f"{legacy[key]:.4f} |")
    print("(TD prints coverage with 2 decimals and AMR with 4: differences up to 0.005 and "
          "0.00005 are its rounding)")


if __name__ == "__main__":
    main()
