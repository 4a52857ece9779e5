"""AudioDomain without a model: label dropout, priors, null condition, inpainting masks."""

import numpy as np
import pytest
import soundfile as sf
import torch

from domains.audio.domain import AudioDomain


@pytest.fixture
def domain(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("zero", "one", "two"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(4):
                sf.write(tmp_path / split / label / f"{i}.wav",
                         (0.1 * rng.standard_normal(800)).astype(np.float32), 8000,
                         subtype="PCM_16")
    return AudioDomain(str(tmp_path), sample_rate=8000, seconds=0.1, conditional=True,
                       label_dropout=0.5, gain=2.0)


def test_label_dropout_is_a_function_of_the_batch_and_only_in_training(domain):
    domain.setup("fit")
    assert domain.class_names() == ["zero", "one", "two"]  # not alphabetical: digit words
    data = domain.train_dataset()
    batch = domain.collate([data[i] for i in range(12)])
    x0, cond, _ = domain.unpack(batch)
    assert torch.equal(x0, 2.0 * batch[0])
    again = domain.unpack(batch)[1]["labels"]
    assert torch.equal(cond["labels"], again)  # the same batch drops the same labels
    dropped = cond["labels"] == 3
    assert 0 < dropped.sum() < 12
    assert torch.equal(cond["labels"][~dropped], batch[1][~dropped])
    with torch.no_grad():  # validation: no dropout
        assert torch.equal(domain.unpack(batch)[1]["labels"], batch[1])


def test_prior_labels_and_null_condition(domain):
    gen = torch.Generator().manual_seed(0)
    noise, cond, _ = domain.prior(5, gen)
    assert noise.shape == (5, 1, 800) and cond["labels"].tolist() == [0, 1, 2, 0, 1]
    assert domain.prior(2, gen, label="two").cond["labels"].tolist() == [2, 2]
    assert domain.prior(2, gen, label=1).cond["labels"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="unknown label 'ten'; labels: zero, one, two"):
        domain.prior(2, gen, label="ten")
    with pytest.raises(ValueError, match=r"label 5 outside 0..2"):
        domain.prior(2, gen, label=5)
    with pytest.raises(ValueError, match="valid: label"):
        domain.prior(2, gen, speed=2)
    assert domain.null_condition(cond)["labels"].tolist() == [3] * 5
    domain.conditional = False
    with pytest.raises(ValueError, match="class-conditional"):
        domain.prior(2, gen, label=1)


def test_inpainting_mask_in_seconds(domain, tmp_path):
    src = sorted((tmp_path / "test" / "one").glob("*.wav"))[0]
    like = torch.zeros(2, 1, 800)
    known, keep = domain.inpaint_source(src, "0:0.025,0.075:", like, {})
    assert known.shape == (2, 1, 800) and keep.shape == (1, 1, 800)
    expected = torch.zeros(800)
    expected[:200] = 1
    expected[600:] = 1
    assert torch.equal(keep[0, 0], expected)
    wave = torch.from_numpy(sf.read(src, dtype="float32")[0])
    assert torch.equal(known[1, 0], 2.0 * wave)
    for bad in ("0.5", "b:1", "0.2:0.1"):
        with pytest.raises(ValueError, match="--mask"):
            domain.inpaint_source(src, bad, like, {})


def test_sample_rate_null_follows_the_most_common_rate_and_names_a_mix(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for i, rate in enumerate((16000, 16000, 16000, 8000)):
        (tmp_path / "a").mkdir(exist_ok=True)
        sf.write(tmp_path / "a" / f"{i}.wav", (0.1 * rng.standard_normal(rate // 10)
                                               ).astype(np.float32), rate, subtype="PCM_16")
    domain = AudioDomain(str(tmp_path), seconds=0.1)  # sample_rate left out: the data's
    assert domain.sample_rate == 16000 and domain.length == 1600
    domain.setup("fit")
    assert domain.split("train")[0][0].shape == (1, 1600)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "8000 Hz (1), 16000 Hz (3)" in lines[0]
    state = domain.sampling_state()
    assert state["sample_rate"] == 16000 and state["data_rate"] == 16000
    # a model loaded without its data takes the stored rate
    fresh = AudioDomain(str(tmp_path / "gone"), seconds=0.1)
    fresh.load_sampling_state(state)
    assert fresh.sample_rate == 16000
    with pytest.raises(FileNotFoundError, match="sample_rate: null takes the rate"):
        _ = AudioDomain(str(tmp_path / "gone")).sample_rate
    with pytest.raises(ValueError, match="sample_rate must be"):
        AudioDomain(str(tmp_path), sample_rate=0)
