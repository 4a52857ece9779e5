"""Folders of audio files as fixed-length mono waveforms with class labels.

Layout: ``<root>/<label>/<name>.(wav|flac|ogg)`` (the SC09 / Speech Commands layout); a
``<root>`` without sub-folders holding audio is one unlabelled class. Reading:

* soundfile (libsndfile) decodes WAV, FLAC and OGG/Vorbis;
* several channels are mixed to mono by averaging them (the downmix of torchaudio and
  librosa), so a stereo clip keeps its loudness when both channels carry the same signal;
* a clip at another sample rate is resampled with torchaudio's windowed-sinc resampler
  (``torchaudio.transforms.Resample``, the defaults of ``torchaudio.functional.resample``),
  or refused when ``resample=False``;
* the clip is cut to ``length`` samples (its start, or its centre with ``crop="center"``) or
  padded with zeros at the end.

Bad files (empty, truncated, not audio, zero-length, NaN, another rate without resampling)
raise ``BadAudioError`` naming the file, or with ``skip_bad=True`` are left out and counted
in ``WavFolder.skipped``.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class BadAudioError(ValueError):
    """An audio file that cannot be used; the message names it."""


def wav_truncation(path: Path) -> str | None:
    """For a RIFF/WAVE file whose data chunk declares more bytes than the file holds (a
    copy or download cut short, which libsndfile reads silently as a shorter clip), a
    description of the shortfall; None otherwise (other formats are not checked)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                available = size - pos - 8
                if length != 0xFFFFFFFF and length > available:  # 0xFFFFFFFF: streamed
                    return f"truncated: the data chunk declares {length} bytes, the file " \
                           f"holds {available}"
                return None
            pos += 8 + length + (length & 1)
    return None


@functools.lru_cache(maxsize=8)
def _resampler(orig: int, new: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig, new)  # the sinc kernel is built once


def resample_waves(waves: Tensor, orig: int, new: int, chunk: int = 256) -> Tensor:
    """torchaudio's windowed-sinc resampling of [..., T] clips, the kernel built once per
    pair of rates and the clips processed in batches."""
    flat = waves.reshape(-1, waves.shape[-1])
    with torch.no_grad():
        out = torch.cat([_resampler(orig, new)(flat[s:s + chunk])
                         for s in range(0, len(flat), chunk)])
    return out.reshape(*waves.shape[:-1], out.shape[-1])


def read_audio(path: Path, sample_rate: int, resample: bool = True) -> Tensor:
    """One file as a mono float32 waveform at ``sample_rate``.

    Shapes:
        returns [T] with T >= 1.
    """
    wave, rate = read_native(path)
    return _to_rate(wave, rate, sample_rate, resample, path)


def _to_rate(wave: Tensor, rate: int, sample_rate: int, allowed: bool, path: Path) -> Tensor:
    if rate == sample_rate:
        return wave
    if not allowed:
        raise BadAudioError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz "
                            "(set resample: true to convert)")
    return resample_waves(wave, rate, sample_rate)


def read_native(path: Path) -> tuple[Tensor, int]:
    """One file as a mono float32 waveform [T] at its own rate, and that rate."""
    import soundfile as sf

    path = Path(path)
    if path.stat().st_size == 0:
        raise BadAudioError(f"{path}: empty file")
    cut = wav_truncation(path)
    if cut:
        raise BadAudioError(f"{path}: {cut}")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's errors: not audio, truncated header, ...
        raise BadAudioError(f"{path}: not a readable audio file ({err})") from None
    if data.shape[0] == 0:
        raise BadAudioError(f"{path}: zero-length clip")
    if not np.isfinite(data).all():
        raise BadAudioError(f"{path}: contains NaN or Inf samples")
    return torch.from_numpy(data.mean(axis=1)), rate  # mono: the average of the channels


def fit_length(wave: Tensor, length: int, crop: str = "start") -> Tensor:
    """Cut (``crop`` = "start" keeps the beginning, "center" the middle) or zero-pad the
    end to exactly ``length`` samples. Shapes: [T] -> [length]."""
    if crop not in ("start", "center"):
        raise ValueError(f"crop must be 'start' or 'center', got {crop!r}")
    if len(wave) >= length:
        off = (len(wave) - length) // 2 if crop == "center" else 0
        return wave[off:off + length]
    return torch.nn.functional.pad(wave, (0, length - len(wave)))


def find_classes(root: Path) -> list[str]:
    """Sub-folder names that hold audio files, sorted; digit words (all of them or some)
    come in numeric order (zero, one, ..., nine)."""
    names = sorted(d.name for d in root.iterdir()
                   if d.is_dir() and any(f.suffix.lower() in AUDIO_SUFFIXES for f in d.iterdir()))
    if names and set(names) <= set(DIGIT_WORDS):
        return sorted(names, key=DIGIT_WORDS.index)
    return names


def folder_rates(root: Path) -> Counter:
    """How many audio files under ``root`` (recursively) have each sample rate, read from
    the file headers; unreadable files are left to the loader to report."""
    import soundfile as sf

    rates: Counter = Counter()
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            try:
                rates[sf.info(path).samplerate] += 1
            except Exception:  # noqa: BLE001 - soundfile raises its own types
                continue
    return rates


def describe_folder(path: Path) -> dict:
    """``diffplat data info audio PATH``: files per split and label, the sample rates of
    the first 50 files of each split (an unreadable one is named)."""
    import soundfile as sf

    if not path.is_dir():
        raise FileNotFoundError(f"audio data folder not found: {path}")
    out: dict = {"path": str(path)}
    splits = [s for s in ("train", "val", "test") if (path / s).is_dir()] or ["."]
    for split in splits:
        files = sorted(p for p in (path / split).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        labels: dict[str, int] = {}
        for f in files:
            labels[f.parent.name] = labels.get(f.parent.name, 0) + 1
        rates = set()
        for f in files[:50]:
            try:
                rates.add(sf.info(f).samplerate)
            except Exception as err:  # noqa: BLE001 - soundfile raises its own types
                raise ValueError(f"{f}: not a readable audio file ({err})") from None
        out[split] = {"files": len(files), "per_label": labels,
                      "sample_rates_of_first_50": sorted(rates)}
    return out


def random_splits(data: Dataset, seed: int = 0) -> dict[str, Subset]:
    """A folder without train/val/test sub-folders split at random: 5% test, 5% val (at
    least one clip each), the rest train, by a permutation seeded with ``seed`` (the
    diffusion domain and the classifier split a folder alike)."""
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = max(1, len(data) // 20)
    return {"test": Subset(data, perm[:n_eval]), "val": Subset(data, perm[n_eval:2 * n_eval]),
            "train": Subset(data, perm[2 * n_eval:])}


class WavFolder(Dataset):
    """Labelled clips of a folder, loaded into memory at construction (and so checked).

    Args:
        root: the folder (``<root>/<label>/*.wav``, or audio files directly in it).
        sample_rate: rate of the returned waveforms (Hz).
        length: samples per clip.
        classes: label names in class-index order (default: :func:`find_classes`); a folder
            not in the list is an error naming it.
        crop: "start" or "center" for clips longer than ``length``.
        resample: resample other rates (else they are bad files).
        skip_bad: skip bad files and count them in ``skipped`` instead of raising.
        max_items: keep only the first items (sorted by path) of each class.

    ``rates`` counts the files' own sample rates (before any resampling).

    Shapes:
        item: (wave [1, length] float32, label int64 scalar).
    """

    def __init__(self, root: str | Path, sample_rate: int = 16000, length: int = 16000,
                 classes: list[str] | None = None, crop: str = "start", resample: bool = True,
                 skip_bad: bool = False, max_items: int | None = None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"audio folder not found: {root}")
        found = find_classes(root)
        if classes is None:
            classes = found
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{root}: folders {unknown} are not among the classes {classes}")
        self.classes = list(classes)
        files: list[tuple[Path, int]] = []
        for index, name in enumerate(self.classes):
            folder = root / name
            if folder.is_dir():
                paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
                files += [(p, index) for p in paths[:max_items]]
        if not files:  # no class folders: the audio files of root itself, one class
            paths = sorted(p for p in root.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            files = [(p, 0) for p in paths[:max_items]]
            if not self.classes:
                self.classes = [root.name]
        if not files:
            raise FileNotFoundError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) "
                                    "in it or in its sub-folders")
        raw, labels, self.paths, self.skipped = [], [], [], 0
        self.bad: list[str] = []
        for path, label in files:
            try:
                wave, rate = read_native(path)
                if rate != sample_rate and not resample:
                    _to_rate(wave, rate, sample_rate, False, path)  # raises, naming the file
            except BadAudioError as err:
                if not skip_bad:
                    raise
                self.skipped += 1
                self.bad.append(str(err))
                continue
            raw.append((wave, rate))
            labels.append(label)
            self.paths.append(path)
        # resample clips of one rate and length together (much faster than one by one)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (wave, rate) in enumerate(raw):
            if rate != sample_rate:
                groups.setdefault((rate, len(wave)), []).append(i)
        self.rates = Counter(rate for _, rate in raw)
        waves = [w for w, _ in raw]
        for (rate, _), idx in groups.items():
            out = resample_waves(torch.stack([waves[i] for i in idx]), rate, sample_rate)
            for i, w in zip(idx, out):
                waves[i] = w
        waves = [fit_length(w, length, crop) for w in waves]
        if not waves:
            raise BadAudioError(f"{root}: all {len(files)} audio files are bad, e.g. "
                                f"{self.bad[0]}")
        self.waves = torch.stack(waves)[:, None]
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.waves[i], self.labels[i]
