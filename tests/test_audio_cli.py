"""Audio end to end through the CLI on a tiny synthesised digits set: prepare, fit the
classifier, fit a conditional waveform model, sample (plain, by label, guided, inpainted),
evaluate samples and reference data."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from diffplat.cli import main
from domains.audio.data import read_audio
from tests.helpers import CPU_TRAINER, moved_away

CLASSIFIER = """
seed_everything: 0
trainer:
  max_steps: 6
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  default_root_dir: {root}
model:
  class_path: domains.audio.classifier.DigitClassifier
  init_args:
    data_path: {data}
    batch_size: 8
    network:
      channels: [4, 8]
"""

DIFFUSION = CPU_TRAINER.replace("{steps}", "4") + """
model:
  domain:
    class_path: domains.audio.AudioDomain
    init_args:
      data_path: {data}
      sample_rate: 4000
      seconds: 0.5
      conditional: true
      gain: 2.0
      classifier: {classifier}
      ndb_bins: 5
  backbone:
    class_path: domains.audio.UNet1D
    init_args:
      channels: [8, 16, 16]
      factors: [4, 5]
      blocks: 1
      attention_levels: [2]
      heads: 2
      emb_dim: 32
  target: v
  batch_size: 8
  sample_num: 0
  sampler: dpmpp_2m
  sample_steps: 3
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audio")
    data = tmp / "digits"
    assert main(["data", "prepare", "digits", "--out", str(data), "-o", "per_voice=1",
                 "-o", "max_voices=5", "-o", "num_val=1", "-o", "num_test=1"]) == 0
    (tmp / "clf.yaml").write_text(CLASSIFIER.format(root=tmp / "clf", data=data))
    assert main(["fit", "-c", str(tmp / "clf.yaml")]) == 0
    classifier = tmp / "clf" / "checkpoints" / "last.ckpt"
    assert classifier.is_file()
    cfg = tmp / "diff.yaml"
    cfg.write_text(DIFFUSION.format(root=tmp / "run", data=data, classifier=classifier))
    assert main(["fit", "-c", str(cfg)]) == 0
    return tmp, cfg, tmp / "run" / "checkpoints" / "last.ckpt"


def test_classifier_checkpoint_is_safe_and_scores_clips(trained):
    tmp, _, _ = trained
    from domains.audio.classifier import classify, load_classifier

    ckpt = torch.load(tmp / "clf" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["diffplat"]["classes"][:3] == ["zero", "one", "two"]
    net, classes = load_classifier(tmp / "clf" / "checkpoints" / "last.ckpt")
    feats, probs = classify(net, torch.randn(3, 1, 8000), 8000)  # resampled to 16 kHz
    assert feats.shape == (3, 8) and torch.allclose(probs.sum(1), torch.ones(3, dtype=probs.dtype))


def test_sample_write_read_evaluate(trained, tmp_path, capsys):
    _, cfg, ckpt = trained
    common = ["--ckpt", str(ckpt), "--num", "10", "--steps", "3", "--no-progress"]
    assert main(["sample", *common, "--out", str(tmp_path / "s")]) == 0
    # one WAV per sample: the summary names a few, not all ten
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "sample_00000.wav" in line and "sample_00005.wav" not in line and "more" in line
    wavs = sorted((tmp_path / "s").glob("*.wav"))
    assert len(wavs) == 10 and sf.info(wavs[0]).samplerate == 4000
    assert sf.info(wavs[0]).frames == 2000
    labels = (tmp_path / "s" / "labels.csv").read_text().splitlines()
    assert labels[0] == "file,label,name" and labels[4] == "sample_00003.wav,3,three"
    assert (tmp_path / "s" / "preview.png").stat().st_size > 5000
    out = tmp_path / "m.json"
    assert main(["evaluate", "--samples", str(tmp_path / "s"), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    # the classifier metrics, and beside them the label-free ones
    assert {"fid", "is", "mis", "am", "ndb", "ndb_k", "accuracy", "fd_mel",
            "mmd_mel"} <= set(metrics)
    assert 1.0 <= metrics["is"] <= 10.0 and metrics["num"] == 10
    # the reference row: the test voices scored like samples (labels are the truth)
    ref = tmp_path / "r.json"
    assert main(["evaluate", "--reference", "-c", str(cfg), "--split", "test", "--num", "10",
                 "--json", str(ref)]) == 0
    assert json.loads(ref.read_text())["metrics"]["num"] == 10


def test_label_prior_guidance_and_errors(trained, tmp_path, capsys):
    _, cfg, ckpt = trained
    common = ["--ckpt", str(ckpt), "--num", "4", "--steps", "2", "--no-progress"]
    assert main(["sample", *common, "--prior", "label=seven", "--guidance", "2.0",
                 "--out", str(tmp_path / "g")]) == 0
    rows = (tmp_path / "g" / "labels.csv").read_text().splitlines()[1:]
    assert all(r.endswith(",7,seven") for r in rows)
    assert json.loads((tmp_path / "g" / "meta.json").read_text())["nfe"] == 4  # 2 x guided
    assert main(["sample", *common, "--prior", "label=eleven", "--out", str(tmp_path / "x")]) == 1
    assert "unknown label 'eleven'" in capsys.readouterr().err
    # without a classifier: the label-free metrics alone, no error
    nocls = tmp_path / "nocls.yaml"
    nocls.write_text(cfg.read_text().replace("      classifier:", "      # classifier:"))
    out = tmp_path / "nocls.json"
    assert main(["evaluate", "--reference", "-c", str(nocls), "--num", "5",
                 "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert {"fd_mel", "mmd_mel"} <= set(metrics) and "fid" not in metrics
    assert "classifier" not in capsys.readouterr().err
    # a classifier named but missing: the same, and one line saying what is left out
    gone = tmp_path / "gone.yaml"
    gone.write_text(cfg.read_text().replace("classifier: ", f"classifier: {tmp_path}/no"))
    assert main(["evaluate", "--reference", "-c", str(gone), "--num", "5"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "classifier" in line]
    assert len(err) == 1 and "does not exist" in err[0] and "left out" in err[0]


def test_inpainting_keeps_the_kept_region_exactly(trained, tmp_path):
    tmp, _, ckpt = trained
    from diffplat.training.checkpoint import load_module

    source = sorted((tmp / "digits" / "test").rglob("*.wav"))[0]
    module = load_module(ckpt)
    clips, _ = module.generate(3, steps=3, inpaint=(source, "0:0.25"), seed=1)
    known = read_audio(source, 4000)[:2000]
    # no label asked: the continuation keeps the source's digit (its folder), not 0, 1, 2
    names = module.domain.class_names()
    assert clips.labels.tolist() == [names.index(source.parent.name)] * 3
    assert torch.equal(clips.audio[:, 0, :1000], known[:1000].expand(3, -1))
    assert not torch.allclose(clips.audio[:, 0, 1000:], known[1000:].expand(3, -1))
    # the samples know what was kept, and the preview shades it
    assert clips.kept.shape == (3, 2000) and clips.kept[:, :1000].all()
    assert not clips.kept[:, 1000:].any()
    # and through the CLI, into 16-bit files: the kept samples are the source's
    assert main(["sample", "--ckpt", str(ckpt), "--num", "2", "--steps", "3", "--no-progress",
                 "--inpaint", str(source), "--mask", "0.25:", "--out", str(tmp_path / "i")]) == 0
    sf.write(tmp_path / "src.wav", known.numpy(), 4000, subtype="PCM_16")
    expected = sf.read(tmp_path / "src.wav", dtype="int16")[0][1000:]
    for wav in sorted((tmp_path / "i").glob("*.wav")):
        got = sf.read(wav, dtype="int16")[0]
        assert np.array_equal(got[1000:], expected)
    with pytest.raises(ValueError, match="kept time ranges"):
        module.domain.inpaint_source(Path(source), "0.5", clips.audio, {})


def test_fit_refuses_an_untrusted_model_class(tmp_path, capsys):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text("model:\n  class_path: os.system\n  init_args: {}\n")
    assert main(["fit", "-c", str(cfg)]) == 2
    assert "outside the trusted packages" in capsys.readouterr().err


def test_export_samples_from_an_empty_folder_without_the_clips(trained, tmp_path,
                                                              monkeypatch):
    tmp, _, ckpt = trained
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "model")]) == 0
    with moved_away(tmp / "digits"):
        empty = tmp_path / "elsewhere"
        empty.mkdir()
        monkeypatch.chdir(empty)
        for source in (tmp_path / "model", ckpt):
            out = empty / f"s-{source.name}"
            assert main(["sample", "--ckpt", str(source), "--num", "2", "--steps", "3",
                         "--prior", "label=seven", "--out", str(out), "--no-progress"]) == 0
            assert len(sorted(out.glob("*.wav"))) == 2
            rows = (out / "labels.csv").read_text().strip().splitlines()[1:]
            assert [r.split(",")[2] for r in rows] == ["seven", "seven"]
        # the Python API from the same empty folder
        import diffplat

        pipe = diffplat.load(tmp_path / "model")
        clips = pipe.sample(2, steps=3, label="seven", seed=2)
        written = pipe.write(clips, empty / "api")
        wavs = sorted((empty / "api").glob("*.wav"))
        assert len(wavs) == 2 and all(p in written for p in wavs)
        rows = (empty / "api" / "labels.csv").read_text().strip().splitlines()[1:]
        assert [r.split(",")[2] for r in rows] == ["seven", "seven"]


def test_export_carries_the_classifier_and_scores_as_the_checkpoint(trained, tmp_path):
    """Domain.assets: the export copies the digit classifier into assets/, a loaded export
    scores with that copy, and the same samples get the same metrics from either source
    with the original classifier gone."""
    import json

    import diffplat

    tmp, _, ckpt = trained
    folder = tmp_path / "model"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(folder)]) == 0
    meta = json.loads((folder / "config.json").read_text())
    assert meta["assets"] == {"classifier": "assets/classifier.ckpt"}
    original = tmp / "clf" / "checkpoints" / "last.ckpt"
    assert (folder / "assets" / "classifier.ckpt").read_bytes() == original.read_bytes()
    from_ckpt = diffplat.load(ckpt)
    clips = from_ckpt.sample(4, steps=3, seed=5)
    want = from_ckpt.metrics(clips)
    with moved_away(original):
        pipe = diffplat.load(folder)
        assert pipe.domain.classifier == str((folder / "assets" / "classifier.ckpt").resolve())
        got = pipe.metrics(clips)
    assert set(got) == set(want) and "accuracy" in got
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k
    # a folder whose asset went missing says which
    (folder / "assets" / "classifier.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match="lacks its asset assets/classifier.ckpt"):
        diffplat.load(folder)
