"""Shapes data: mesh reading in every format, bad meshes, surface sampling, layouts,
procedural determinism, normalisation."""

import tracemalloc

import numpy as np
import pytest
import torch
import trimesh

from domains.shapes.domain import ShapeDomain, normalize_per_shape
from domains.shapes.meshes import (
    BadMeshError,
    load_mesh,
    load_point_cache,
    sample_surface,
    scan_folder,
)
from domains.shapes.procedural import CLASSES, build, prepare_procedural


def _write(path, mesh):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = mesh.export(file_type=path.suffix[1:])
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.mark.parametrize("ext", ["obj", "off", "stl", "ply", "glb"])
def test_every_format_reads_back_the_same_surface(tmp_path, ext):
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    v, f = load_mesh(_write(tmp_path / f"box.{ext}", box))
    assert len(f) == 12
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]),
                                axis=1).sum()
    assert area == pytest.approx(2 * (2 + 3 + 6), rel=1e-6)


def test_area_weighted_sampling_lies_on_the_surface_in_proportion_to_area():
    # two triangles in the z=0 plane with areas 1 and 3 (disjoint in x)
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 0, 0], [8, 0, 0], [5, 2, 0]], float)
    f = np.array([[0, 1, 2], [3, 4, 5]])
    pts = sample_surface(v, f, 40000, np.random.default_rng(0))
    assert np.all(pts[:, 2] == 0)
    first = pts[:, 0] < 2
    assert first.mean() == pytest.approx(0.25, abs=0.01)    # 4 standard errors ~ 0.009
    a = pts[first]
    assert np.all(a[:, 0] >= 0) and np.all(a[:, 1] >= 0)
    assert np.all(a[:, 0] + a[:, 1] / 2 <= 1 + 1e-12)       # inside triangle 1
    # uniform inside a triangle: the mean is the centroid
    np.testing.assert_allclose(a.mean(0), [1 / 3, 2 / 3, 0], atol=0.01)


def test_huge_mesh_sampling_needs_about_eight_bytes_per_face():
    F = 1_000_000
    rng = np.random.default_rng(0)
    v = rng.normal(size=(F // 2, 3))
    f = rng.integers(0, len(v), size=(F, 3))
    tracemalloc.start()
    pts = sample_surface(v, f, 2048, rng)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert pts.shape == (2048, 3)
    # areas + their cumulative sum are 16 bytes/face; a [F, 3, 3] triangle array alone
    # would be 72 bytes/face
    assert peak < 24 * F, peak


@pytest.mark.parametrize("content,needle", [
    (b"this is not a mesh \x00\x01", "unreadable"),
    (b"", "no faces"),
    (b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "zero surface area"),
    (b"v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
])
def test_bad_meshes_name_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.obj" if needle != "unreadable" else tmp_path / "bad.off"
    path.write_bytes(content)
    with pytest.raises(BadMeshError) as err:
        v, f = load_mesh(path)
        sample_surface(v, f, 10, np.random.default_rng(0), str(path))
    assert needle in str(err.value) and str(path) in str(err.value)


def _small_set(root, per_class=4):
    for label in ("chair", "torus"):
        for i in range(per_class):
            split = "train" if i < per_class - 2 else ("val" if i == per_class - 2 else "test")
            _write(root / label / split / f"{label}_{i}.obj", build(label, 0, i))


def test_skip_bad_counts_and_keeps_every_good_mesh(tmp_path, capsys):
    _small_set(tmp_path)
    (tmp_path / "chair" / "train" / "broken.off").write_bytes(b"OFF\n3 1 0\n0 0 0\n")
    (tmp_path / "torus" / "train" / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\n"
                                                           "f 1 2 3\n")
    with pytest.raises(BadMeshError, match="broken.off.*skip_bad"):
        load_point_cache(tmp_path, 32, 0, skip_bad=False)
    cache = load_point_cache(tmp_path, 32, 0, skip_bad=True)
    assert len(cache["skipped"]) == 2
    assert sorted(cache["labels"]["train"]) == ["chair", "chair", "torus", "torus"]
    assert cache["points"]["train"].shape == (4, 32, 3)
    again = load_point_cache(tmp_path, 32, 0, skip_bad=True)   # from the cache file
    np.testing.assert_array_equal(again["points"]["train"], cache["points"]["train"])
    assert len(again["skipped"]) == 2
    # the domain says how many it left out, in one line
    from domains.shapes.domain import ShapeDomain

    capsys.readouterr()
    ShapeDomain(str(tmp_path), num_points=32, skip_bad=True).setup()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2 bad meshes" in err[0] and str(tmp_path) in err[0]


def test_empty_folder_and_missing_folder_fail_clearly(tmp_path):
    (tmp_path / "chair").mkdir()
    with pytest.raises(ValueError, match="no mesh files"):
        scan_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        scan_folder(tmp_path / "nope")


def test_shapenet_and_modelnet_layouts(tmp_path):
    # ShapeNet: <synset>/<model>/models/model_normalized.obj, split 70/10/20 per class
    for i in range(10):
        _write(tmp_path / "sn" / "03001627" / f"m{i}" / "models" / "model_normalized.obj",
               build("chair", 1, i))
    files = scan_folder(tmp_path / "sn")
    assert {f.label for f in files} == {"03001627"}
    assert [sum(f.split == s for f in files) for s in ("train", "val", "test")] == [7, 1, 2]
    # ModelNet: <class>/{train,test}/*.off; val is carved from train
    for split, n in (("train", 20), ("test", 5)):
        for i in range(n):
            _write(tmp_path / "mn" / "torus" / split / f"torus_{split}_{i}.off",
                   build("torus", 2, i))
    files = scan_folder(tmp_path / "mn")
    assert [sum(f.split == s for f in files) for s in ("train", "val", "test")] == [19, 1, 5]


def test_procedural_set_is_deterministic_for_a_seed(tmp_path):
    a = prepare_procedural(tmp_path / "a", per_class=4, seed=3)
    prepare_procedural(tmp_path / "b", per_class=4, seed=3)
    prepare_procedural(tmp_path / "c", per_class=4, seed=4)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 6 * 4 + 1 and len(a) == len(CLASSES) + 1
    assert {p.suffix for p in files} == {".obj", ".off", ".ply", ".stl", ".json"}
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
               for p in files)
    assert any((tmp_path / "a" / p).read_bytes() != (tmp_path / "c" / p).read_bytes()
               for p in files if p.suffix != ".json")
    # the same loader reads them: every file gives points
    cache = load_point_cache(tmp_path / "a", 16, 0, skip_bad=False)
    assert sum(len(v) for v in cache["labels"].values()) == 24 and not cache["skipped"]


def test_normalisations(tmp_path):
    _small_set(tmp_path, per_class=5)
    glob = ShapeDomain(str(tmp_path), num_points=64, normalize="global")
    glob.setup()
    raw = torch.from_numpy(load_point_cache(tmp_path, 64, 0, False)["points"]["train"])
    # PointFlow: mean per axis, one std over all coordinates of the training set
    np.testing.assert_allclose(glob.mean.numpy(), raw.double().reshape(-1, 3).mean(0).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert float(glob.std) == pytest.approx(float(raw.double().reshape(-1).std()), rel=1e-5)
    ref = glob.reference(2, "train").points
    torch.testing.assert_close(glob.to_model(ref), glob.train_dataset().points[:2])
    x = torch.randn(3, 50, 3) * torch.tensor([1.0, 2.0, 3.0]) + 5
    s = normalize_per_shape(x, "unit_sphere")
    torch.testing.assert_close(s.mean(1), torch.zeros(3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.norm(dim=-1).amax(1), torch.ones(3))
    b = normalize_per_shape(x, "unit_box")
    torch.testing.assert_close((b.amax(1) - b.amin(1)).amax(1), torch.full((3,), 2.0))
    torch.testing.assert_close(b.amax(1) + b.amin(1), torch.zeros(3, 3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unit_sphere"):
        ShapeDomain(str(tmp_path), normalize="per_shape")


def test_point_cloud_files_with_nan_or_wrong_shape_name_the_file(tmp_path):
    from domains.shapes.io import read_cloud, write_ply

    bad = np.zeros((10, 3))
    bad[4, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="nan.npy.*NaN"):
        read_cloud(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", np.zeros((10, 2)))
    with pytest.raises(ValueError, match="flat.npy.*shape"):
        read_cloud(tmp_path / "flat.npy")
    pts = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(read_cloud(write_ply(tmp_path / "c.ply", pts)), pts)


def test_unconditional_domain_refuses_labels_and_guidance(tmp_path):
    _small_set(tmp_path)
    dom = ShapeDomain(str(tmp_path), num_points=32, conditional=False)
    x0, cond, _ = dom.unpack(next(iter(torch.utils.data.DataLoader(dom.train_dataset(), 4))))
    assert x0.shape == (4, 32, 3) and cond["labels"].tolist() == [-1] * 4
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="class-conditional"):
        dom.prior(2, gen, label="chair")
    with pytest.raises(NotImplementedError, match="no null condition"):
        dom.null_condition(cond)
    cond_dom = ShapeDomain(str(tmp_path), num_points=32, conditional=True)
    noise, cond, _ = cond_dom.prior(3, gen, label="torus")
    assert noise.shape == (3, 32, 3) and cond["labels"].tolist() == [1, 1, 1]
    assert cond_dom.null_condition(cond)["labels"].tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="valid: chair, torus"):
        cond_dom.prior(1, gen, label="sofa")


def test_two_writers_of_the_same_point_cache_both_succeed(tmp_path, monkeypatch):
    """compare's two shape workers built one cache at once and the slower one lost its
    temporary file; here a second writer finishes between the first's write and rename."""
    from domains.shapes import meshes

    _small_set(tmp_path / "d", per_class=2)
    real = meshes.np.savez
    calls = []

    def savez_then_a_rival(path, *a, **kw):
        real(path, *a, **kw)
        calls.append(path)
        if len(calls) == 1:  # the rival starts and finishes now
            meshes.load_point_cache(tmp_path / "d", 32, 0, False)

    monkeypatch.setattr(meshes.np, "savez", savez_then_a_rival)
    first = meshes.load_point_cache(tmp_path / "d", 32, 0, False)
    assert len(calls) == 2 and calls[0] != calls[1]
    monkeypatch.setattr(meshes.np, "savez", real)
    again = meshes.load_point_cache(tmp_path / "d", 32, 0, False)  # read from the cache
    for split in first["points"]:
        np.testing.assert_array_equal(first["points"][split], again["points"][split])
    assert not list((tmp_path / "d" / ".cache").glob("*.tmp.npz"))
