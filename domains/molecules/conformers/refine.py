"""Conformers refined from RDKit ETKDG starts (``Pipeline.sample(refine_from="etkdg")``).

Each ETKDG conformer is noised to schedule time ``noise_level`` and the reverse process runs
from there (SDEdit, Meng et al. 2022), as ``diffplat conformers --refine-from etkdg`` does.
ETKDG's own seconds are counted in the record.
"""

from __future__ import annotations

import time
from typing import Any


def refine_conformers(domain, module, num: int, *, start: str, noise_level: float,
                      mmff: bool, sampler: str, steps: int, seed: int,
                      prior: dict[str, Any]) -> tuple[list, dict[str, Any]]:
    """``num`` conformers of ``prior["smiles"]`` (``copies`` each), refined from ETKDG
    (``mmff``: relaxed with MMFF94 first); returns them with the sampling record. A molecule
    outside the model's training range raises an ``OutOfRangeError`` before anything runs,
    or with ``prior["allow_out_of_range"]`` warns and goes on (scope.py)."""
    from domains.molecules.conformers.baseline import rdkit_conformers
    from domains.molecules.conformers.domain import Conformer
    from domains.molecules.conformers.io import smiles_graphs
    from domains.molecules.conformers.sample import model_conformers
    from domains.molecules.conformers.scope import check_graphs

    if start != "etkdg":
        raise ValueError(f"refine_from must be 'etkdg', got {start!r}")
    extra = set(prior) - {"smiles", "copies", "allow_out_of_range"}
    if "smiles" not in prior or extra:
        raise ValueError("refinement takes smiles= (and copies=, allow_out_of_range=)"
                         + (f", not {sorted(extra)}" if extra else ""))
    smiles = prior["smiles"]
    mols = smiles_graphs(smiles, domain.vocabulary)
    check_graphs(mols, domain.training_range(), bool(prior.get("allow_out_of_range")))
    copies = prior.get("copies")
    if copies is None and num % len(mols) == 0:
        copies = num // len(mols)
    if copies is None or num != len(mols) * copies:
        raise ValueError(f"num={num} must be len(smiles) * copies = {len(mols)} * "
                         f"{copies if copies is not None else 'copies'}")
    names = [smiles] if isinstance(smiles, str) else list(smiles)
    t0 = time.perf_counter()
    starts = [rdkit_conformers(g.mol, copies, mmff, seed) for g in mols]
    etkdg_seconds = time.perf_counter() - t0
    failed = [names[k] for k, s in enumerate(starts) if not s]
    if failed:
        raise ValueError("RDKit could not embed " + ", ".join(map(repr, failed))
                         + " (no ETKDG start to refine)")
    t0 = time.perf_counter()
    out = model_conformers(module, mols, copies, sampler, steps, seed,
                           device=str(module.device), starts=starts, start_t=noise_level)
    stats = {"sampler": sampler, "steps": steps,
             "refine": {"from": "etkdg", "t": noise_level, "mmff": mmff},
             "etkdg_seconds": etkdg_seconds,
             "seconds": etkdg_seconds + time.perf_counter() - t0}
    return [Conformer(g, pos) for g, confs in zip(mols, out) for pos in confs], stats
