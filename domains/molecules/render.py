"""A PNG grid of 3D ball-and-stick renders (matplotlib, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from domains.molecules.features import Molecule

COLORS = {"H": "#e8e8e8", "C": "#404040", "N": "#3050f8", "O": "#ff0d0d", "F": "#90e050",
          "S": "#ffff30", "Cl": "#1ff01f", "P": "#ff8000", "Br": "#a62929", "I": "#940094"}
SIZES = {"H": 25}

Bonds = Callable[[Molecule], list[tuple[int, int, int]]]


def render_grid(molecules: list[Molecule], path: Path, bonds: Bonds,
                titles: list[str] | None = None, columns: int = 4) -> Path:
    """Draw up to 16 molecules in a grid, bonds as sticks (double/triple thicker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mols = molecules[:16]
    rows = max(1, math.ceil(len(mols) / columns))
    fig = plt.figure(figsize=(3 * columns, 3 * rows), dpi=90)
    for k, mol in enumerate(mols):
        ax = fig.add_subplot(rows, columns, k + 1, projection="3d")
        pos = np.asarray(mol.positions, dtype=float)
        pos = pos - pos.mean(0)
        for i, j, order in bonds(mol):
            ax.plot(*zip(pos[i], pos[j]), color="0.35", linewidth=1.2 * order, zorder=1)
        ax.scatter(pos[:, 0], pos[:, 1], pos[:, 2],
                   c=[COLORS.get(s, "#ff1493") for s in mol.symbols],
                   s=[SIZES.get(s, 60) for s in mol.symbols], edgecolors="k",
                   linewidths=0.4, depthshade=True, zorder=2)
        span = max(float(np.abs(pos).max()), 1.0)
        for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            setter(-span, span)
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
