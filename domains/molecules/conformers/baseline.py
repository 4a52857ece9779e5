"""RDKit's ETKDG (Riniker and Landrum 2015; v3: Wang et al. 2020), optionally relaxed with
MMFF94, as the conformer baseline with the same inputs and outputs as the model."""

from __future__ import annotations

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem


def rdkit_conformers(mol: Chem.Mol, num: int, mmff: bool = False, seed: int = 0,
                     max_attempts: int = 0) -> list[np.ndarray]:
    """``num`` ETKDGv3 conformers of ``mol`` (its atoms, hydrogens and stereo tags as given).

    Args:
        mol: molecule with explicit hydrogens; existing conformers are ignored.
        num: conformers to embed.
        mmff: relax each with MMFF94 (up to 2000 iterations) when MMFF has parameters.
        seed: random seed >= 0 (reproducible output; passed to RDKit as seed + 1).
        max_attempts: ETKDG's maxIterations (0: RDKit's default).

    Returns:
        list of [n, 3] float64 arrays in ``mol``'s atom order; empty when RDKit cannot embed
        the molecule.
    """
    m = Chem.Mol(mol)
    m.RemoveAllConformers()
    params = AllChem.ETKDGv3()
    # RDKit quirk: randomSeed 0 gives every conformer of EmbedMultipleConfs the same
    # coordinates (seen with RDKit 2026.09; tests/test_conformers_metrics.py), so seeds are
    # shifted by one; -1 (RDKit's "random") is never passed
    params.randomSeed = int(seed) + 1
    params.pruneRmsThresh = -1.0
    if max_attempts:
        params.maxIterations = int(max_attempts)
    with rdBase.BlockLogs():
        ids = list(AllChem.EmbedMultipleConfs(m, int(num), params))
        if ids and mmff and AllChem.MMFFHasAllMoleculeParams(m):
            AllChem.MMFFOptimizeMoleculeConfs(m, numThreads=1, maxIters=2000)
    return [m.GetConformer(i).GetPositions() for i in ids]
