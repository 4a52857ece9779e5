"""Audio data: WAV folders, bad files, mono mix, resampling, the espeak-ng digits set."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from domains.audio.data import BadAudioError, WavFolder, fit_length, read_audio
from domains.audio.domain import AudioDomain


def _tone(freq: float, rate: int = 8000, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def folder(tmp_path):
    for label, freq in (("low", 200.0), ("high", 1200.0)):
        (tmp_path / label).mkdir()
        for i in range(3):
            sf.write(tmp_path / label / f"{i}.wav", _tone(freq * (1 + 0.1 * i)), 8000,
                     subtype="PCM_16")
    return tmp_path


def test_folder_labels_lengths_and_padding(folder):
    data = WavFolder(folder, sample_rate=8000, length=4000)
    assert data.classes == ["high", "low"] and len(data) == 6
    wave, label = data[0]
    assert wave.shape == (1, 4000) and label.item() == 0
    # 2000 samples of tone, then zeros; the tone matches the file up to 16-bit rounding
    ref = _tone(1200.0)
    assert torch.allclose(wave[0, :2000], torch.from_numpy(ref), atol=1 / 32768)
    assert torch.count_nonzero(wave[0, 2000:]) == 0
    assert fit_length(torch.arange(10.0), 4, "center").tolist() == [3, 4, 5, 6]


def test_stereo_is_averaged_and_other_rates_resampled(tmp_path):
    left, right = _tone(300.0, 16000), _tone(500.0, 16000)
    sf.write(tmp_path / "st.flac", np.stack([left, right], 1), 16000, subtype="PCM_24")
    # mono mix at the file's own rate: the channel average
    mono = read_audio(tmp_path / "st.flac", 16000)
    assert torch.allclose(mono, torch.from_numpy((left + right) / 2), atol=2e-6)
    # another rate: resampled to the asked rate (length scales), or refused
    low = read_audio(tmp_path / "st.flac", 8000)
    assert low.shape == (len(left) // 2,)
    with pytest.raises(BadAudioError, match=r"st\.flac: sample rate 16000 Hz, expected 8000"):
        read_audio(tmp_path / "st.flac", 8000, resample=False)


def _bad_files(root: Path) -> None:
    good = root / "zero" / "ok.wav"
    raw = good.read_bytes()
    (root / "zero" / "empty.wav").write_bytes(b"")
    (root / "zero" / "text.wav").write_text("this is not audio")
    (root / "zero" / "cut.wav").write_bytes(raw[: len(raw) // 2])
    sf.write(root / "zero" / "silent.wav", np.zeros(0, np.float32), 8000)


def test_bad_files_named_or_skipped_with_a_count(tmp_path):
    (tmp_path / "zero").mkdir()
    sf.write(tmp_path / "zero" / "ok.wav", _tone(440.0), 8000, subtype="PCM_16")
    _bad_files(tmp_path)
    expected = {"cut.wav": "truncated", "empty.wav": "empty file",
                "silent.wav": "zero-length clip", "text.wav": "not a readable audio file"}
    for name, why in expected.items():
        with pytest.raises(BadAudioError, match=why) as err:
            read_audio(tmp_path / "zero" / name, 8000)
        assert name in str(err.value)
    with pytest.raises(BadAudioError, match="cut.wav"):  # sorted: cut.wav comes first
        WavFolder(tmp_path, 8000, 2000)
    data = WavFolder(tmp_path, 8000, 2000, skip_bad=True)
    assert len(data) == 1 and data.skipped == 4
    assert data.paths == [tmp_path / "zero" / "ok.wav"]


def test_folder_without_audio_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no audio files"):
        WavFolder(tmp_path, 8000, 100)
    with pytest.raises(FileNotFoundError, match="audio data folder not found"):
        AudioDomain(str(tmp_path / "missing")).setup()


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.wav")):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_espeak_digits_are_deterministic_and_split_by_voice(tmp_path):
    from domains.audio.digits import DIGITS, prepare_digits

    opts = {"per_voice": 1, "max_voices": 4, "num_val": 1, "num_test": 1}
    prepare_digits(tmp_path / "a", seed=3, **opts)
    prepare_digits(tmp_path / "b", seed=3, workers=1, **opts)
    prepare_digits(tmp_path / "c", seed=4, **opts)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    files = sorted((tmp_path / "a").rglob("*.wav"))
    assert len(files) == 4 * 10
    info = sf.info(files[0])
    assert (info.samplerate, info.frames, info.channels) == (16000, 16000, 1)
    speakers = {s: {f.stem.rsplit("_", 1)[0] for f in (tmp_path / "a" / s).rglob("*.wav")}
                for s in ("train", "val", "test")}
    assert len(speakers["train"]) == 2 and len(speakers["val"]) == len(speakers["test"]) == 1
    assert not (speakers["train"] & speakers["test"]) and not (speakers["val"] & speakers["test"])
    data = WavFolder(tmp_path / "a" / "train", 16000, 16000)
    assert data.classes == list(DIGITS)  # numeric order, not alphabetical
    peak = data.waves.abs().amax(-1).squeeze(1)
    assert (peak > 0.25).all() and (peak < 0.95).all()
