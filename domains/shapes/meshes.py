"""Mesh folders -> surface point clouds: reading, checking, area-weighted sampling, caching.

Layouts (the class is always the first folder under the root):

* ``<root>/<class>/<split>/<name>.<ext>`` with ``<split>`` one of train, val, test: the
  ModelNet layout (``val`` may be absent: then 5 % of ``train`` becomes ``val``), also what
  ``diffplat data prepare shapes`` writes.
* ``<root>/<class>/<model>/.../<name>.<ext>`` or ``<root>/<class>/<name>.<ext>``: the ShapeNet
  layout (``<synset>/<model_id>/models/model_normalized.obj``) or a flat folder per class;
  such files are split 70/10/20 per class with a fixed seed.

Points are sampled uniformly on the surface: a triangle is drawn with probability
proportional to its area, then a point uniformly inside it (Osada et al. 2002, sec. 4.2:
``(1 - sqrt(r1)) A + sqrt(r1) (1 - r2) B + sqrt(r1) r2 C``). Areas are computed chunk by
chunk, so a mesh of tens of millions of faces needs 16 bytes per face (areas and their
cumulative sum) beyond trimesh's own arrays and never a [F, 3, 3] triangle array.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffplat.domain import SPLITS

MESH_EXTENSIONS = (".obj", ".off", ".stl", ".ply", ".glb", ".gltf")
#: fractions (train, val) of files in layouts without split folders; the rest is test
SPLIT_FRACTIONS = (0.7, 0.1)
_FACE_CHUNK = 1 << 16


class BadMeshError(ValueError):
    """A mesh that cannot give surface points; the message names the file."""


@dataclass
class MeshFile:
    path: Path
    label: str
    split: str


def load_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh file (obj, off, stl, ply, glb) with trimesh and check it.

    Returns:
        (vertices [V, 3] float64, faces [F, 3] int64); scenes (glb) are flattened.

    Raises:
        BadMeshError naming the file: unreadable, no faces, NaN/Inf vertices, face indices
        out of range, or zero surface area.
    """
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for corrupt files
        raise BadMeshError(f"{path}: unreadable mesh ({type(err).__name__}: {err})") from None
    faces = np.asarray(getattr(mesh, "faces", np.empty((0, 3))), dtype=np.int64)
    vertices = np.asarray(getattr(mesh, "vertices", np.empty((0, 3))), dtype=np.float64)
    if faces.ndim != 2 or len(faces) == 0:
        raise BadMeshError(f"{path}: the mesh has no faces (empty file or a point cloud)")
    if not np.isfinite(vertices).all():
        raise BadMeshError(f"{path}: the mesh has NaN or Inf vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise BadMeshError(f"{path}: face indices out of range (0..{len(vertices) - 1})")
    return vertices, faces


def _face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangle areas [F] in float64, computed in chunks of faces."""
    areas = np.empty(len(faces), dtype=np.float64)
    for s in range(0, len(faces), _FACE_CHUNK):
        f = faces[s:s + _FACE_CHUNK]
        a = vertices[f[:, 0]]
        cross = np.cross(vertices[f[:, 1]] - a, vertices[f[:, 2]] - a)
        areas[s:s + len(f)] = 0.5 * np.sqrt((cross * cross).sum(1))
    return areas


def sample_surface(vertices: np.ndarray, faces: np.ndarray, num: int,
                   rng: np.random.Generator, name: str = "mesh") -> np.ndarray:
    """``num`` points uniformly distributed on the surface (area-weighted).

    Shapes:
        vertices [V, 3], faces [F, 3] -> [num, 3] float64.
    """
    cdf = np.cumsum(_face_areas(vertices, faces))
    total = float(cdf[-1])
    if not np.isfinite(total) or total <= 0:
        raise BadMeshError(f"{name}: the mesh has zero surface area")
    face = np.searchsorted(cdf, rng.random(num) * total, side="right").clip(0, len(faces) - 1)
    r1, r2 = np.sqrt(rng.random((num, 1))), rng.random((num, 1))
    tri = faces[face]
    a, b, c = vertices[tri[:, 0]], vertices[tri[:, 1]], vertices[tri[:, 2]]
    return (1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c


def _file_seed(seed: int, key: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def scan_folder(root: Path, split_seed: int = 0) -> list[MeshFile]:
    """Find the mesh files under ``root`` and give each a class and a split (module doc).

    Raises:
        FileNotFoundError if ``root`` is missing; ValueError if it holds no mesh files.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"shape data folder not found: {root} (create a procedural "
                                "set with `diffplat data prepare shapes`)")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in MESH_EXTENSIONS
                   and p.is_file() and not any(s.startswith(".") for s in
                                               p.relative_to(root).parts))
    files, unsplit = [], {}
    for p in found:
        parts = p.relative_to(root).parts
        if len(parts) < 2:
            continue  # files directly under the root have no class
        if len(parts) == 3 and parts[1] in SPLITS:
            files.append(MeshFile(p, parts[0], parts[1]))
        else:
            unsplit.setdefault(parts[0], []).append(p)
    if not files and not unsplit:
        raise ValueError(f"no mesh files ({', '.join(MESH_EXTENSIONS)}) in class folders "
                         f"under {root}")
    # ModelNet has train/test only: carve val out of train, per class
    for label in sorted({f.label for f in files}):
        own = [f for f in files if f.label == label]
        if own and not any(f.split == "val" for f in own):
            train = [f for f in own if f.split == "train"]
            order = np.random.default_rng(split_seed).permutation(len(train))
            for i in order[:max(1, len(train) // 20) if len(train) > 1 else 0]:
                train[i].split = "val"
    for label, paths in sorted(unsplit.items()):
        order = np.random.default_rng(_file_seed(split_seed, label) % 2**32).permutation(
            len(paths))
        n_train = int(round(SPLIT_FRACTIONS[0] * len(paths)))
        n_val = int(round(SPLIT_FRACTIONS[1] * len(paths)))
        for rank, i in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            files.append(MeshFile(paths[i], label, split))
    return sorted(files, key=lambda f: (f.split, f.label, str(f.path)))


def sample_files(files: list[MeshFile], root: Path, num_points: int, seed: int,
                 skip_bad: bool) -> tuple[np.ndarray, list[MeshFile], list[str]]:
    """Sample ``num_points`` per file; each file's points depend only on (seed, its path).

    Returns:
        (points [M, num_points, 3] float32, the files kept, messages of the files skipped).
    """
    clouds, kept, skipped = [], [], []
    from diffplat.progress import bar

    for f in bar(files, desc="sampling mesh surfaces", unit="mesh"):
        key = f.path.relative_to(root).as_posix()
        try:
            v, fc = load_mesh(f.path)
            pts = sample_surface(v, fc, num_points,
                                 np.random.default_rng(_file_seed(seed, key)), str(f.path))
        except BadMeshError as err:
            if not skip_bad:
                raise BadMeshError(f"{err} (set skip_bad: true to skip bad meshes)") from None
            skipped.append(str(err))
            continue
        clouds.append(pts.astype(np.float32))
        kept.append(f)
    points = np.stack(clouds) if clouds else np.zeros((0, num_points, 3), np.float32)
    return points, kept, skipped


def load_point_cache(root: Path, num_points: int, seed: int, skip_bad: bool,
                     split_seed: int = 0, cache_dir: Path | None = None) -> dict:
    """Sampled points of every mesh under ``root``, cached in an ``.npz``.

    The cache key covers the file list (paths, sizes, modification times), the number of
    points, the seeds and ``skip_bad``; any change re-samples.

    Returns:
        {"points": {split: [M, N, 3]}, "labels": {split: [str]}, "files": {split: [str]},
        "skipped": [messages], "cache": path}.
    """
    files = scan_folder(root, split_seed)
    h = hashlib.sha256(json.dumps([num_points, seed, split_seed, skip_bad, 1]).encode())
    for f in files:
        st = f.path.stat()
        h.update(f"{f.path.relative_to(root).as_posix()}|{f.split}|{st.st_size}|"
                 f"{st.st_mtime_ns}\n".encode())
    cache_dir = Path(cache_dir) if cache_dir else Path(root) / ".cache"
    cache = cache_dir / f"points_{num_points}_{h.hexdigest()[:16]}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            points = {s: z[f"points_{s}"] for s in SPLITS}
        return {"points": points, "labels": meta["labels"], "files": meta["files"],
                "skipped": meta["skipped"], "cache": str(cache)}
    points, labels, names, skipped = {}, {}, {}, []
    for split in SPLITS:
        own = [f for f in files if f.split == split]
        pts, kept, bad = sample_files(own, Path(root), num_points, seed, skip_bad)
        points[split], skipped = pts, skipped + bad
        labels[split] = [f.label for f in kept]
        names[split] = [f.path.relative_to(root).as_posix() for f in kept]
    if sum(len(v) for v in labels.values()) == 0:
        raise ValueError(f"{root}: every mesh is bad ({len(skipped)} skipped)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {"labels": labels, "files": names, "skipped": skipped}
    # a name of its own: two processes (compare's workers) may build the same cache at once,
    # and each must find its own file to move into place (the contents are identical)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
    np.savez(tmp, meta=json.dumps(meta), **{f"points_{s}": points[s] for s in SPLITS})
    tmp.replace(cache)
    return {"points": points, "labels": labels, "files": names, "skipped": skipped,
            "cache": str(cache)}
