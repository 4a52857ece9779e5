"""A user's own sounds end to end through the CLI: a labelled folder of 16 kHz WAVs written
here (no split sub-folders), a model whose rate follows the data, label-free metrics
without any classifier, a classifier trained on the folder's own labels, a rate mismatch
named in one line, and inpainting that keeps the source's label."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from diffplat.cli import main
from tests.helpers import CPU_TRAINER

RATE = 16000

DIFFUSION = CPU_TRAINER.replace("{steps}", "4") + """
model:
  domain:
    class_path: domains.audio.AudioDomain
    init_args:
      data_path: {data}
      seconds: 0.25
      conditional: true
      gain: 3.0
      ndb_bins: 4
{extra}
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

CLASSIFIER = """
seed_everything: 0
trainer:
  max_steps: 40
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  default_root_dir: {root}
model:
  class_path: domains.audio.classifier.DigitClassifier
  init_args:
    data_path: {data}
    sample_rate: 16000
    seconds: 0.25
    batch_size: 8
    lr: 0.01
    augment: false
    network:
      channels: [4, 8]
"""


def _sounds(root, rng, per_label=40):
    """'hum': a low tone (150-300 Hz) with a little noise; 'hiss': white noise. 16 kHz."""
    t = np.arange(RATE // 4) / RATE
    for label in ("hum", "hiss"):
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            if label == "hum":
                wave = 0.4 * np.sin(2 * np.pi * rng.uniform(150, 300) * t + rng.uniform(0, 6))
                wave += 0.01 * rng.standard_normal(len(t))
            else:
                wave = rng.uniform(0.05, 0.2) * rng.standard_normal(len(t))
            sf.write(root / label / f"{i:02d}.wav", wave.astype(np.float32), RATE,
                     subtype="PCM_16")


def _config(tmp, name, data, extra=""):
    path = tmp / f"{name}.yaml"
    path.write_text(DIFFUSION.format(root=tmp / name, data=data, extra=extra))
    return path


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own-audio")
    data = tmp / "sounds"
    _sounds(data, np.random.default_rng(0))
    cfg = _config(tmp, "run", data)  # no sample_rate: it follows the data
    assert main(["fit", "-c", str(cfg)]) == 0
    return tmp, data, cfg, tmp / "run" / "checkpoints" / "last.ckpt"


def _sample(ckpt, out, *extra):
    return main(["sample", "--ckpt", str(ckpt), "--num", "4", "--steps", "2", "--no-progress",
                 "--out", str(out), *extra])


def test_the_sample_rate_follows_the_data_into_samples_and_exports(own, tmp_path,
                                                                   monkeypatch):
    tmp, data, _, ckpt = own
    state = torch.load(ckpt, weights_only=True)["diffplat"]["domain_state"]
    assert state["sample_rate"] == RATE and state["data_rate"] == RATE
    assert _sample(ckpt, tmp_path / "s") == 0
    wavs = sorted((tmp_path / "s").glob("*.wav"))
    assert len(wavs) == 4 and {sf.info(w).samplerate for w in wavs} == {RATE}
    assert sf.info(wavs[0]).frames == RATE // 4
    # an export samples at the data's rate with the data gone
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "model")]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data.rename(tmp / "away")
    try:
        assert _sample(tmp_path / "model", elsewhere / "e") == 0
    finally:
        (tmp / "away").rename(data)
    assert {sf.info(w).samplerate for w in (elsewhere / "e").glob("*.wav")} == {RATE}


def test_a_rate_other_than_the_data_is_named_in_one_line(own, tmp_path, capsys):
    tmp, data, _, _ = own
    cfg = _config(tmp_path, "r8k", data, extra="      sample_rate: 8000")
    capsys.readouterr()
    assert main(["fit", "-c", str(cfg)]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "Hz" in x]
    assert len(lines) == 1 and "16000 Hz" in lines[0] and "8000 Hz" in lines[0]
    assert "resampled" in lines[0]
    assert _sample(tmp_path / "r8k" / "checkpoints" / "last.ckpt", tmp_path / "s") == 0
    assert {sf.info(w).samplerate for w in (tmp_path / "s").glob("*.wav")} == {8000}
    lines = [x for x in capsys.readouterr().err.splitlines() if "Hz" in x]
    assert len(lines) == 1 and "written at 8000 Hz" in lines[0] and "16000 Hz" in lines[0]


def test_own_sounds_are_scored_without_a_classifier(own, tmp_path, capsys):
    tmp, data, cfg, ckpt = own
    assert _sample(ckpt, tmp_path / "s") == 0
    out = tmp_path / "m.json"
    assert main(["evaluate", "--samples", str(tmp_path / "s"), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert {"fd_mel", "mmd_mel", "rms", "num"} <= set(metrics) and "fid" not in metrics
    assert "error" not in capsys.readouterr().err
    # the user's own clips score as close to the data, white noise as far from it:
    # folders of WAVs written here, scored against the training split
    # (evaluate --samples reads the domain from meta.json, which also counts the clips)
    meta = {**json.loads((tmp_path / "s" / "meta.json").read_text()), "num": 20}
    rng = np.random.default_rng(1)
    scores = {}
    for name in ("like", "noise"):
        folder = tmp_path / name
        if name == "like":
            _sounds(tmp_path / "fresh", rng, per_label=10)
            folder.mkdir()
            for i, wav in enumerate(sorted((tmp_path / "fresh").rglob("*.wav"))):
                shutil.copy(wav, folder / f"clip_{i:02d}.wav")
        else:
            folder.mkdir()
            for i in range(20):
                sf.write(folder / f"clip_{i:02d}.wav",
                         (0.6 * rng.standard_normal(RATE // 4)).clip(-1, 1).astype(np.float32),
                         RATE, subtype="PCM_16")
        (folder / "meta.json").write_text(json.dumps(meta))
        assert main(["evaluate", "--samples", str(folder), "--json",
                     str(tmp_path / f"{name}.json")]) == 0
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    assert scores["like"]["num"] == 20
    # clips made elsewhere (no meta.json), scored from Python as docs/audio.md shows
    from domains.audio.domain import AudioDomain

    domain = AudioDomain(str(data), seconds=0.25, conditional=True)
    got = domain.metrics(domain.read(tmp_path / "like"))
    assert got["fd_mel"] == pytest.approx(scores["like"]["fd_mel"], rel=1e-9)
    assert got["mmd_mel"] == pytest.approx(scores["like"]["mmd_mel"], rel=1e-9, abs=1e-12)
    assert scores["like"]["fd_mel"] < scores["noise"]["fd_mel"] / 10
    assert scores["like"]["mmd_mel"] < 0.2 < scores["noise"]["mmd_mel"]
    # and the reference row of the user's folder (its random test split)
    assert main(["evaluate", "--reference", "-c", str(cfg), "--split", "test", "--num", "4",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["fd_mel"] >= 0


def test_a_classifier_trained_on_the_folders_labels(own, tmp_path, capsys):
    tmp, data, _, _ = own
    clf = tmp_path / "clf.yaml"
    clf.write_text(CLASSIFIER.format(root=tmp_path / "clf", data=data))
    assert main(["fit", "-c", str(clf)]) == 0
    ckpt = tmp_path / "clf" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["diffplat"]["classes"] == ["hiss", "hum"]
    cfg = _config(tmp_path, "withclf", data, extra=f"      classifier: {ckpt}")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--reference", "-c", str(cfg), "--split", "test", "--num", "4",
                 "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert {"fid", "is", "ndb_k", "accuracy", "fd_mel", "mmd_mel"} <= set(metrics)
    assert metrics["accuracy"] == 1.0  # a tone and white noise, told apart
    # a classifier of other classes (here: another order) does not apply: a note, the
    # label-free metrics still
    other = _config(tmp_path, "other", data,
                    extra=f"      classifier: {ckpt}\n      classes: [hum, hiss]")
    capsys.readouterr()
    assert main(["evaluate", "--reference", "-c", str(other), "--split", "test", "--num", "4",
                 "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert "fd_mel" in metrics and "fid" not in metrics
    err = [x for x in capsys.readouterr().err.splitlines() if "classifier" in x]
    assert len(err) == 1 and "knows the classes hiss, hum" in err[0]


def _labels(folder):
    return [r.split(",")[2] for r in (folder / "labels.csv").read_text().splitlines()[1:]]


def test_inpainting_keeps_the_source_label_or_says_it_is_free(own, tmp_path, capsys):
    tmp, data, _, ckpt = own
    source = data / "hum" / "03.wav"
    keep = ["--inpaint", str(source), "--mask", "0:0.1"]
    capsys.readouterr()
    assert _sample(ckpt, tmp_path / "a", *keep) == 0
    assert _labels(tmp_path / "a") == ["hum"] * 4
    assert "keep the source's label 'hum'" in capsys.readouterr().err
    # an asked label wins
    assert _sample(ckpt, tmp_path / "b", *keep, "--prior", "label=hiss") == 0
    assert _labels(tmp_path / "b") == ["hiss"] * 4
    # a sample folder's labels.csv names the label of its files
    assert _sample(ckpt, tmp_path / "c", "--inpaint", str(tmp_path / "b" / "sample_00001.wav"),
                   "--mask", "0:0.1") == 0
    assert _labels(tmp_path / "c") == ["hiss"] * 4
    # a file of unknown label: the classes in turn, and the output says the label is free
    loose = tmp_path / "loose.wav"
    shutil.copy(source, loose)
    capsys.readouterr()
    assert _sample(ckpt, tmp_path / "d", "--inpaint", str(loose), "--mask", "0:0.1") == 0
    assert _labels(tmp_path / "d") == ["hiss", "hum", "hiss", "hum"]
    assert "the label is free" in capsys.readouterr().err
