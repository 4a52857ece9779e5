"""Shape completion: the known part of a cloud for ``diffplat sample --inpaint PATH --mask
SPEC``, placed in the first slots of every sample (the backbone is permutation-equivariant,
so which slots hold the known points does not matter).

Mask specs:

* ``view:+x`` (``-x``, ``+y``, ``-y``, ``+z``, ``-z`` or a direction ``view:1,0,1``), with an
  optional kept fraction ``view:+x@0.3`` (default 0.5): the cloud "seen from one side": the
  points whose projection onto the direction is at least the (1 - fraction) quantile.
  The file's cloud is first reduced to the model's ``num_points`` (a fixed-seed subset).
* ``first``: the file holds a partial cloud of M <= num_points points (a scan, a cut), all
  of them known.

PATH is a .ply, .npy or .npz file (or a folder written by ``diffplat sample``) in the data
coordinates of the domain's samples; one cloud conditions every sample, a stack of at least
``--num`` clouds conditions one sample each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def parse_mask(spec: str) -> tuple[str, np.ndarray | None, float]:
    """``spec`` -> (kind, direction or None, kept fraction); errors name the spec."""
    hint = "use view:+x, view:-z@0.3, view:1,0,1 or first"
    if spec in ("first", "partial"):
        return "first", None, 1.0
    if not spec.startswith("view:"):
        raise ValueError(f"--mask {spec!r}: unknown mask; {hint}")
    body, _, frac = spec[5:].partition("@")
    try:
        fraction = float(frac) if frac else 0.5
        if len(body) == 2 and body[0] in "+-" and body[1] in AXES:
            direction = np.array(AXES[body[1]]) * (1 if body[0] == "+" else -1)
        else:
            direction = np.array([float(v) for v in body.split(",")])
    except ValueError:
        raise ValueError(f"--mask {spec!r}: cannot parse; {hint}") from None
    if direction.shape != (3,) or not np.linalg.norm(direction) > 0:
        raise ValueError(f"--mask {spec!r}: the direction needs 3 components, not all 0")
    if not 0 < fraction <= 1:
        raise ValueError(f"--mask {spec!r}: the kept fraction must be in (0, 1]")
    return "view", direction / np.linalg.norm(direction), fraction


def seen_from(points: np.ndarray, direction: np.ndarray, fraction: float) -> np.ndarray:
    """The points whose projection on ``direction`` is in the top ``fraction``. [P,3]->[M,3]"""
    proj = points @ direction
    keep = max(1, int(round(fraction * len(points))))
    order = np.argsort(-proj, kind="stable")[:keep]
    return points[np.sort(order)]


def partial_cloud(domain: Any, path: Path, spec: str, like: Tensor) -> tuple[Tensor, Tensor]:
    """(known [B, N, 3] in model space, mask [B, N, 1]) for the Inpainting wrapper."""
    from domains.shapes.io import read_cloud

    kind, direction, fraction = parse_mask(spec)
    file = path / "clouds.npy" if path.is_dir() else path
    clouds = read_cloud(file)
    clouds = clouds[None] if clouds.ndim == 2 else clouds
    B, N, _ = like.shape
    if len(clouds) != 1 and len(clouds) < B:
        raise ValueError(f"{file}: {len(clouds)} clouds for {B} samples (give one cloud or "
                         "at least as many as --num)")
    known = torch.zeros_like(like)
    mask = torch.zeros(B, N, 1, dtype=like.dtype, device=like.device)
    for b in range(B):
        pts = clouds[0 if len(clouds) == 1 else b]
        if kind == "view":
            if len(pts) > N:
                pts = pts[np.sort(np.random.default_rng(0).permutation(len(pts))[:N])]
            pts = seen_from(pts, direction, fraction)
        elif len(pts) > N:
            raise ValueError(f"{file}: a partial cloud of {len(pts)} points does not fit in "
                             f"{N} points per sample (--mask first needs fewer)")
        x = torch.as_tensor(pts, dtype=torch.float64)
        known[b, : len(pts)] = domain.to_model(x).to(like)
        mask[b, : len(pts)] = 1
    return known, mask
