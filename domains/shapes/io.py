"""Point clouds in and out: PLY and NPY files, and a PNG grid of multi-view renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: (elevation, azimuth) in degrees of the three views of every cloud in a preview
VIEWS = ((20, -60), (0, 0), (90, -90))


def write_ply(path: Path, points: np.ndarray) -> Path:
    """A binary little-endian PLY with float32 x, y, z vertices and no faces."""
    pts = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 3)
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by diffplat\n"
              f"element vertex {len(pts)}\nproperty float x\nproperty float y\n"
              "property float z\nend_header\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(pts.tobytes())
    return path


def read_cloud(path: Path) -> np.ndarray:
    """One cloud [N, 3] or a stack [K, N, 3] from a .ply (vertices; ascii or binary, read by
    trimesh), .npy or .npz (array ``points``) file.

    Raises:
        ValueError naming the file for unreadable data, a wrong shape, or NaN/Inf.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no point cloud at {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arr = z["points"]
        elif suffix == ".ply":
            import trimesh

            arr = np.asarray(trimesh.load(str(path), process=False).vertices)
        else:
            raise ValueError("expected .ply, .npy or .npz")
    except (ValueError, KeyError, OSError, AttributeError) as err:
        raise ValueError(f"{path}: cannot read a point cloud ({err})") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[-1] != 3 or arr.shape[-2] == 0:
        raise ValueError(f"{path}: expected points of shape [N, 3] or [K, N, 3], got "
                         f"{arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: the point cloud has NaN or Inf coordinates")
    return arr


def render_grid(clouds: np.ndarray, path: Path, titles: list[str] | None = None,
                max_clouds: int = 8, point_size: float | None = None,
                kept: np.ndarray | None = None) -> Path:
    """A PNG with one row per cloud (up to ``max_clouds``) and one column per view in
    ``VIEWS`` (perspective, front, top), all views of a cloud on the same scale; the marker
    size defaults to one that suits the number of points. ``kept`` [B, N] (completion)
    draws the kept points in red and the generated ones in grey-blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clouds = np.asarray(clouds)[:max_clouds]
    if point_size is None:  # about the same ink for 256 or 2048 points
        point_size = float(np.clip(2048 / max(1, clouds.shape[1]), 1, 6))
    rows, cols = max(1, len(clouds)), len(VIEWS)
    fig = plt.figure(figsize=(2.4 * cols, 2.4 * rows), dpi=80)
    for r, pts in enumerate(clouds):
        centre = (pts.max(0) + pts.min(0)) / 2
        span = max(float((pts.max(0) - pts.min(0)).max()) / 2, 1e-6)
        for c, (elev, azim) in enumerate(VIEWS):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1, projection="3d")
            # data are Y-up (ShapeNet); matplotlib's vertical axis is z, so plot (x, z, y)
            if kept is None:
                ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], s=point_size, c=pts[:, 1],
                           cmap="viridis", depthshade=False, linewidths=0)
            else:
                colours = np.where(kept[r][:, None], [[0.85, 0.1, 0.1]], [[0.45, 0.55, 0.7]])
                ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], s=point_size, c=colours,
                           depthshade=False, linewidths=0)
            ax.set_xlim(centre[0] - span, centre[0] + span)
            ax.set_ylim(centre[2] - span, centre[2] + span)
            ax.set_zlim(centre[1] - span, centre[1] + span)
            ax.view_init(elev=elev, azim=azim)
            ax.set_axis_off()
            if c == 0 and titles:
                ax.set_title(titles[r], fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
