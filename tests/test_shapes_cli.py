"""The shapes domain end to end from the CLI: prepare, fit, sample (class-conditional,
guided, completion), evaluate."""

import json

import numpy as np
import pytest

from diffplat.cli import main
from domains.shapes.io import read_cloud, write_ply
from tests.helpers import moved_away

CONFIG = """
seed_everything: 0
trainer:
  max_steps: 4
  max_epochs: -1
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
  enable_model_summary: false
  check_val_every_n_epoch: 1
  default_root_dir: {root}
checkpoint:
  every_n_train_steps: 4
model:
  domain:
    class_path: domains.shapes.ShapeDomain
    init_args:
      data_path: {data}
      num_points: 64
      normalize: global
      conditional: true
      emd: exact
      emd_max: 6
  backbone:
    class_path: domains.shapes.PointTransformer
    init_args: {{hidden: 16, depth: 1, heads: 2, mlp_ratio: 2.0, fourier_features: 1}}
  schedule: cosine
  target: v
  lr: 0.002
  warmup_steps: 2
  batch_size: 8
  sample_num: 6
  sample_steps: 4
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shapes")
    assert main(["data", "prepare", "shapes", "--out", str(tmp / "data"),
                 "-o", "per_class=6"]) == 0
    cfg = tmp / "cfg.yaml"
    cfg.write_text(CONFIG.format(root=tmp / "run", data=tmp / "data"))
    assert main(["fit", "-c", str(cfg)]) == 0   # validates after epoch 1 (3 steps)
    return tmp


def test_validation_logs_previews_and_3d_clouds_to_wandb(run):
    runs = list((run / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    assert list((media / "images").rglob("*.png"))
    objects = list((media / "object3D").rglob("*.pts.json"))
    assert len(objects) == 4
    points = np.array(json.loads(objects[0].read_text()))
    assert points.shape == (64, 3) and np.isfinite(points).all()


def _sample(run, out, *extra):
    return main(["sample", "--ckpt", str(run / "run" / "checkpoints" / "last.ckpt"),
                 "--steps", "4", "--sampler", "dpmpp_2m", "--no-progress", "--out", str(out),
                 *extra])


def test_sample_writes_ply_npy_preview_and_evaluate_scores_them(run, tmp_path):
    out = tmp_path / "s"
    assert _sample(run, out, "--num", "6", "--prior", "label=chair") == 0
    clouds = np.load(out / "clouds.npy")
    assert clouds.shape == (6, 64, 3) and np.isfinite(clouds).all()
    np.testing.assert_array_equal(read_cloud(out / "ply" / "cloud_00003.ply"),
                                  clouds[3].astype(np.float64))
    info = json.loads((out / "clouds.json").read_text())
    assert info["labels"] == ["chair"] * 6 and info["normalize"] == "global"
    assert (out / "preview.png").stat().st_size > 5000
    assert main(["evaluate", "--samples", str(out), "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())["metrics"]
    for key in ("mmd_cd", "cov_cd", "1nna_cd", "mmd_emd", "cov_emd", "1nna_emd"):
        assert np.isfinite(m[key]), key
    assert 0 <= m["1nna_cd"] <= 100 and m["num_ref"] == 6
    # the reference row: training clouds against the test split
    assert main(["evaluate", "--reference", "-c", str(run / "cfg.yaml"), "--split", "train",
                 "--num", "6", "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert r["mmd_cd"] < m["mmd_cd"]        # 4 training steps do not reach the data


def test_guidance_and_unknown_labels(run, tmp_path, capsys):
    assert _sample(run, tmp_path / "g", "--num", "2", "--guidance", "2.0",
                   "--prior", "label=torus") == 0
    assert np.isfinite(np.load(tmp_path / "g" / "clouds.npy")).all()
    assert _sample(run, tmp_path / "x", "--num", "2", "--prior", "label=sofa") != 0
    assert "unknown label 'sofa'" in capsys.readouterr().err


def test_completion_keeps_the_known_points(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    full = rng.normal(size=(200, 3)) * 0.3 + [0.0, 0.5, 0.0]
    write_ply(tmp_path / "full.ply", full)
    out = tmp_path / "c"
    assert _sample(run, out, "--num", "3", "--inpaint", str(tmp_path / "full.ply"),
                   "--mask", "view:+x@0.5") == 0
    clouds = np.load(out / "clouds.npy")
    # the file's cloud reduced to 64 points, the half with the largest x kept in slots 0..31
    sub = full.astype(np.float32).astype(np.float64)
    sub = sub[np.sort(np.random.default_rng(0).permutation(200)[:64])]
    kept = sub[np.sort(np.argsort(-sub[:, 0], kind="stable")[:32])]
    for c in clouds:
        np.testing.assert_allclose(c[:32], kept, rtol=0, atol=2e-6)
        assert np.isfinite(c[32:]).all() and not np.allclose(c[32:], 0)
    # the samples know which points were kept (the preview draws them in red)
    import diffplat

    done = diffplat.load(run / "run" / "checkpoints" / "last.ckpt").sample(
        2, steps=4, inpaint=(tmp_path / "full.ply", "view:+x@0.5"))
    assert done.kept.shape == (2, 64) and done.kept[:, :32].all() and not done.kept[:, 32:].any()
    # a partial scan of 20 points fills the first 20 slots
    np.save(tmp_path / "part.npy", full[:20])
    assert _sample(run, tmp_path / "p", "--num", "2", "--inpaint", str(tmp_path / "part.npy"),
                   "--mask", "first") == 0
    np.testing.assert_allclose(np.load(tmp_path / "p" / "clouds.npy")[:, :20],
                               np.stack([full[:20]] * 2), rtol=0, atol=2e-6)
    assert _sample(run, tmp_path / "b", "--num", "2", "--inpaint", str(tmp_path / "full.ply"),
                   "--mask", "side:+x") != 0
    assert "--mask 'side:+x'" in capsys.readouterr().err


def test_export_samples_from_an_empty_folder_without_the_meshes(run, tmp_path, monkeypatch):
    ckpt = run / "run" / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "model")]) == 0
    with moved_away(run / "data"):
        empty = tmp_path / "elsewhere"
        empty.mkdir()
        monkeypatch.chdir(empty)
        for source in (tmp_path / "model", ckpt):
            out = empty / f"s-{source.name}"
            assert main(["sample", "--ckpt", str(source), "--num", "3", "--steps", "3",
                         "--prior", "label=mug", "--out", str(out), "--no-progress"]) == 0
            info = json.loads((out / "clouds.json").read_text())
            assert info["labels"] == ["mug"] * 3 and len(info["mean"]) == 3
            assert np.load(out / "clouds.npy").shape == (3, 64, 3)
        # the Python API: a loaded export samples and saves again without the meshes
        import diffplat

        pipe = diffplat.load(tmp_path / "model")
        clouds = pipe.sample(2, steps=3, label="mug", seed=4)
        pipe.save(empty / "saved")
        again = diffplat.load(empty / "saved").sample(2, steps=3, label="mug", seed=4)
        np.testing.assert_allclose(np.asarray(again.points), np.asarray(clouds.points),
                                   rtol=0, atol=1e-5)
