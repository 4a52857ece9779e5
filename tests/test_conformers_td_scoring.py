"""diffplat's default conformer scoring against Torsional Diffusion's own evaluate_confs.py,
run unchanged on the same conformers. Needs a torsional-diffusion clone: set
DIFFPLAT_TD_REPO=/path/to/torsional-diffusion (skipped otherwise)."""

import os
from pathlib import Path

import pytest
from rdkit import Chem

from benchmarks.conformers_td_scoring import run_td, write_td_inputs
from domains.molecules.conformers.baseline import rdkit_conformers
from domains.molecules.conformers.metrics import ensemble_metrics

TD_REPO = os.environ.get("DIFFPLAT_TD_REPO")


@pytest.mark.skipif(not TD_REPO, reason="set DIFFPLAT_TD_REPO to a torsional-diffusion clone")
def test_td_scoring_equals_evaluate_confs_on_the_same_conformers(tmp_path):
    smiles = ["CC(O)C#N", "[H]/N=C(/C)CO", "OCC=O", "CCCCO", "O=CC1CC1", "CC(C)CC=O"]
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in smiles]
    refs = [rdkit_conformers(m, 2, mmff=True, seed=1000) for m in mols]
    gens = [rdkit_conformers(m, 4, seed=0) for m in mols]
    gens[2] = []  # a model failure
    for delta in (0.25, 0.5):
        write_td_inputs(tmp_path, mols, refs, gens)
        td, summary = run_td(Path(TD_REPO), tmp_path, delta)
        assert summary.startswith("5 conformer sets compared 1 model failures")
        ours = ensemble_metrics(mols, refs, gens, delta)
        for key, value in td.items():
            # TD prints coverage (%) with 2 decimals, AMR (A) with 4
            assert ours[key] == pytest.approx(value, abs=0.006 if "cov" in key else 6e-5), key
