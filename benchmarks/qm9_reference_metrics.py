"""EDM's metrics on the QM9 data itself: our numbers against EDM's "Data" row.

EDM (Hoogeboom et al. 2022, Table 2) reports for QM9's own geometries: atom stability
99.0 %, molecule stability 95.2 %, validity 97.7 %, valid and unique 97.7 %. Their script
(``qm9/analyze.py: main_check_stability``) scores the train split (and the test split);
the train split is the reference row here, the other splits and the whole set are printed
too. Novelty is against the train split's geometry-derived SMILES, so it is ~0 for train.

    python benchmarks/qm9_reference_metrics.py [--cache data/qm9/qm9.npz] [--json out.json]

The cache is prepared first (``prepare_qm9``) when the file does not exist.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domains.molecules.metrics import edm_metrics  # noqa: E402
from domains.molecules.qm9 import load_qm9, prepare_qm9  # noqa: E402

EDM_DATA_ROW = {"atom_stability": 0.990, "mol_stability": 0.952, "validity": 0.977,
                "valid_and_unique": 0.977}
TOLERANCE = 0.005       # the issue asks for agreement within half a point


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default="data/qm9/qm9.npz", help="qm9.npz (prepared if absent)")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    cache_path = Path(args.cache)
    info: dict = {}
    if not cache_path.exists():
        t0 = time.perf_counter()
        prepare_qm9(cache_path.parent)
        info["prepare_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"prepared {cache_path} in {info['prepare_seconds']} s "
              f"({cache_path.stat().st_size / 2**20:.1f} MiB)")
    t0 = time.perf_counter()
    cache = load_qm9(cache_path)
    train_smiles = cache.train_smiles()
    info["load_seconds"] = round(time.perf_counter() - t0, 2)
    results = {}
    for split in ("train", "valid", "test", "all"):
        idx = np.arange(len(cache)) if split == "all" else cache.split_indices(split)
        mols = cache.molecules(idx)
        t0 = time.perf_counter()
        res = edm_metrics(mols, train_smiles)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results[split] = res
    print(f"{'split':<6} {'molecules':>9} {'atom st.':>9} {'mol st.':>8} {'valid':>7} "
          f"{'V*U':>7} {'unique':>7} {'novel':>7} {'seconds':>8}")
    for split, r in results.items():
        print(f"{split:<6} {r['n_molecules']:>9} {100 * r['atom_stability']:>8.2f}% "
              f"{100 * r['mol_stability']:>7.2f}% {100 * r['validity']:>6.2f}% "
              f"{100 * r['valid_and_unique']:>6.2f}% {100 * r['uniqueness']:>6.2f}% "
              f"{100 * r['novelty']:>6.2f}% {r['seconds']:>8.1f}")
    ref = results["train"]
    print("EDM's data row (train split):")
    ok = True
    for key, edm in EDM_DATA_ROW.items():
        diff = ref[key] - edm
        ok &= abs(diff) <= TOLERANCE
        print(f"  {key:<17} ours {100 * ref[key]:6.2f}%  EDM {100 * edm:5.1f}%  "
              f"diff {100 * diff:+5.2f} points")
    print("within half a point: " + ("yes" if ok else "NO"))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "edm": EDM_DATA_ROW,
                                               **info}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
