"""A procedural mesh dataset that needs no download: six classes of parametric shapes.

``diffplat data prepare shapes`` writes ``<out>/<class>/<split>/<class>_<id>.<ext>`` (the
ModelNet layout that ``domains.shapes.meshes`` reads), rotating the file format through
obj, off, ply and stl so every reader is exercised, plus ``<out>/manifest.json`` with the
options. Shapes are built Z-up from trimesh primitives with random proportions, then turned
Y-up like ShapeNet; the same seed writes byte-identical files.

Classes: chair (seat, four legs, a back, sometimes arms), table (rectangular with four legs
or round on a pedestal), lamp (base, pole, an open shade), mug (a revolved open cup with a
torus handle), bottle (a revolved body, shoulder and neck), torus.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ("chair", "table", "lamp", "mug", "bottle", "torus")
FORMATS = ("obj", "off", "ply", "stl")
#: fractions of each class in (train, val); the rest is test
FRACTIONS = (0.7, 0.1)


def _box(lo, hi):
    import trimesh

    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return trimesh.creation.box(extents=hi - lo,
                                transform=trimesh.transformations.translation_matrix(
                                    (lo + hi) / 2))


def _legs(rng, half_w, half_d, height, thick):
    inset = rng.uniform(0.0, 0.05)
    xs, ys = half_w - inset - thick / 2, half_d - inset - thick / 2
    return [_box((sx * xs - thick / 2, sy * ys - thick / 2, 0),
                 (sx * xs + thick / 2, sy * ys + thick / 2, height))
            for sx in (-1, 1) for sy in (-1, 1)]


def chair(rng):
    w, d = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    h, t, leg = rng.uniform(0.38, 0.5), rng.uniform(0.03, 0.07), rng.uniform(0.03, 0.06)
    back_h, back_t = rng.uniform(0.35, 0.7), rng.uniform(0.03, 0.06)
    parts = _legs(rng, w / 2, d / 2, h, leg)
    parts.append(_box((-w / 2, -d / 2, h), (w / 2, d / 2, h + t)))
    parts.append(_box((-w / 2, d / 2 - back_t, h + t), (w / 2, d / 2, h + t + back_h)))
    if rng.random() < 0.35:  # arm rests
        arm_h = rng.uniform(0.15, 0.25)
        for sx in (-1, 1):
            x = sx * (w / 2 - 0.02)
            parts.append(_box((x - 0.02, -d / 2, h + t + arm_h - 0.03),
                              (x + 0.02, d / 2 - back_t, h + t + arm_h)))
            parts.append(_box((x - 0.02, -d / 2, h + t), (x + 0.02, -d / 2 + 0.04,
                                                          h + t + arm_h - 0.03)))
    return parts


def table(rng):
    import trimesh

    h, t = rng.uniform(0.6, 0.8), rng.uniform(0.03, 0.07)
    if rng.random() < 0.35:  # round, on a pedestal
        r = rng.uniform(0.4, 0.7)
        top = trimesh.creation.cylinder(radius=r, height=t, sections=48)
        top.apply_translation((0, 0, h + t / 2))
        pole_r = rng.uniform(0.04, 0.08)
        pole = trimesh.creation.cylinder(radius=pole_r, height=h, sections=24)
        pole.apply_translation((0, 0, h / 2))
        foot = trimesh.creation.cylinder(radius=rng.uniform(0.2, 0.35) * r / 0.5 * 0.8,
                                         height=0.03, sections=32)
        foot.apply_translation((0, 0, 0.015))
        return [top, pole, foot]
    w, d, leg = rng.uniform(0.8, 1.6), rng.uniform(0.5, 1.0), rng.uniform(0.04, 0.08)
    return _legs(rng, w / 2, d / 2, h, leg) + [_box((-w / 2, -d / 2, h), (w / 2, d / 2, h + t))]


def lamp(rng):
    import trimesh

    base_r, pole_h = rng.uniform(0.1, 0.2), rng.uniform(0.5, 1.0)
    base = trimesh.creation.cylinder(radius=base_r, height=0.03, sections=32)
    base.apply_translation((0, 0, 0.015))
    pole = trimesh.creation.cylinder(radius=rng.uniform(0.01, 0.025), height=pole_h,
                                     sections=16)
    pole.apply_translation((0, 0, 0.03 + pole_h / 2))
    shade_h = rng.uniform(0.15, 0.3)
    r_top, r_bottom = rng.uniform(0.05, 0.12), rng.uniform(0.12, 0.25)
    z0 = 0.03 + pole_h - shade_h * rng.uniform(0.3, 0.7)
    shade = trimesh.creation.revolve([[r_bottom, z0], [r_top, z0 + shade_h]], sections=48)
    return [base, pole, shade]


def mug(rng):
    import trimesh

    r, h, wall = rng.uniform(0.3, 0.45), rng.uniform(0.6, 1.0), rng.uniform(0.03, 0.06)
    profile = [[0, 0], [r, 0], [r, h], [r - wall, h], [r - wall, wall], [0, wall]]
    body = trimesh.creation.revolve(profile, sections=48)
    handle_r = rng.uniform(0.15, 0.3) * h
    handle = trimesh.creation.torus(major_radius=handle_r, minor_radius=rng.uniform(0.025,
                                                                                    0.05),
                                    major_sections=32, minor_sections=12)
    handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))
    handle.apply_translation((r, 0, h * rng.uniform(0.45, 0.55)))
    return [body, handle]


def bottle(rng):
    import trimesh

    r, body_h = rng.uniform(0.15, 0.3), rng.uniform(0.5, 0.9)
    neck_r, neck_h = r * rng.uniform(0.25, 0.45), rng.uniform(0.15, 0.35)
    shoulder = rng.uniform(0.08, 0.25)
    profile = [[0, 0], [r, 0], [r, body_h], [neck_r, body_h + shoulder],
               [neck_r, body_h + shoulder + neck_h], [0, body_h + shoulder + neck_h]]
    return [trimesh.creation.revolve(profile, sections=48)]


def torus(rng):
    import trimesh

    major = rng.uniform(0.3, 0.5)
    ring = trimesh.creation.torus(major_radius=major, minor_radius=major * rng.uniform(0.15,
                                                                                        0.5),
                                  major_sections=48, minor_sections=16)
    ring.apply_translation((0, 0, ring.bounds[1, 2]))
    return [ring]


BUILDERS = {"chair": chair, "table": table, "lamp": lamp, "mug": mug, "bottle": bottle,
            "torus": torus}


def build(label: str, seed: int, index: int):
    """One mesh of class ``label``: a trimesh.Trimesh, Y-up, deterministic in (seed, index)."""
    import trimesh

    if label not in BUILDERS:
        raise ValueError(f"unknown procedural class {label!r}; valid: {', '.join(CLASSES)}")
    rng = np.random.default_rng([seed, CLASSES.index(label), index])
    mesh = trimesh.util.concatenate(BUILDERS[label](rng))
    # Z-up -> Y-up (ShapeNet's convention): rotate -90 degrees about X
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0)))
    return mesh


def prepare_procedural(out_dir: Path, per_class: int = 300, seed: int = 0,
                       classes: list[str] | None = None) -> list[Path]:
    """Write ``per_class`` meshes of each class (70/10/20 train/val/test) under ``out_dir``.

    Returns the class folders and the manifest written.
    """
    classes = list(classes or CLASSES)
    unknown = [c for c in classes if c not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown procedural classes {unknown}; valid: {', '.join(CLASSES)}")
    if per_class < 3:
        raise ValueError(f"per_class must be >= 3 (one mesh per split), got {per_class}")
    out_dir = Path(out_dir)
    n_train = int(round(FRACTIONS[0] * per_class))
    n_val = max(1, int(round(FRACTIONS[1] * per_class)))
    from diffplat.progress import bar

    written = []
    progress = bar(total=len(classes) * per_class, desc="procedural meshes", unit="mesh")
    for label in classes:
        for i in range(per_class):
            progress.update(1)
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            ext = FORMATS[i % len(FORMATS)]
            path = out_dir / label / split / f"{label}_{i:04d}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            mesh = build(label, seed, i)
            data = mesh.export(file_type=ext)
            path.write_bytes(data if isinstance(data, bytes) else data.encode())
        written.append(out_dir / label)
    progress.close()
    manifest = out_dir / "manifest.json"
    manifest.write_text(json.dumps({"generator": "diffplat procedural shapes", "seed": seed,
                                    "per_class": per_class, "classes": classes,
                                    "splits": {"train": n_train, "val": n_val,
                                               "test": per_class - n_train - n_val},
                                    "formats": list(FORMATS)}, indent=2))
    return [*written, manifest]
