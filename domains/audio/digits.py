"""The built-in spoken-digits set: "zero".."nine" synthesised offline with espeak-ng.

A stand-in for SC09 (Warden 2018, the ten digit words of Speech Commands: 1 s at 16 kHz),
the benchmark of DiffWave (Kong et al. 2021, Sec. 5.2). Every espeak-ng voice variant
(m1..m8, f1..f5, klatt, whisper, ...: 104 in the espeakng-loader 0.2.4 wheel) is one
*speaker*; each clip draws an English accent (8 of them), a speaking rate, a pitch and a
pitch range, and then a random gain, a random position inside the second and white noise at
a random SNR. The speakers are split into train / val / test, so the test split holds voices
never heard in training (as SC09 splits by speaker).

Written in the SC09 layout, ``<out>/<split>/<label>/<speaker>_<n>.wav`` (16-bit PCM, mono,
16 kHz, exactly 1 s), plus ``manifest.csv`` (every clip's parameters) and ``info.json``.
The output is a pure function of the options (see domains/audio/espeak.py for how espeak-ng
is made deterministic).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffplat.domain import SPLITS

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _rng(seed: int, *keys: Any) -> np.random.Generator:
    digest = hashlib.blake2b("/".join(map(str, (seed, *keys))).encode(), digest_size=8)
    return np.random.default_rng(int.from_bytes(digest.digest(), "little"))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", name)


def split_speakers(speakers: list[str], seed: int, num_val: int,
                   num_test: int) -> dict[str, list[str]]:
    """Disjoint speaker lists per split, drawn with ``seed``."""
    if num_val + num_test >= len(speakers):
        raise ValueError(f"{len(speakers)} voices cannot give {num_val} val and {num_test} "
                         "test voices and leave some for training")
    order = [speakers[i] for i in _rng(seed, "split").permutation(len(speakers))]
    return {"test": sorted(order[:num_test]), "val": sorted(order[num_test:num_test + num_val]),
            "train": sorted(order[num_test + num_val:])}


def _trim(x: np.ndarray, rel: float = 0.02, pad: int = 220) -> np.ndarray:
    """Cut leading and trailing silence (below ``rel`` of the peak), keeping ``pad`` samples."""
    loud = np.flatnonzero(np.abs(x) > rel * max(np.abs(x).max(), 1e-9))
    if len(loud) == 0:
        return x[:0]
    return x[max(0, loud[0] - pad): loud[-1] + pad + 1]


def prepare_digits(out_dir: Path, per_voice: int = 4, seed: int = 0, sample_rate: int = 16000,
                   seconds: float = 1.0, num_val: int = 12, num_test: int = 12,
                   max_voices: int | None = None, workers: int = 2) -> list[Path]:
    """Synthesise the digits set (see the module docstring).

    Args:
        out_dir: output folder.
        per_voice: clips per voice and digit (4 gives 104 x 10 x 4 = 4160 clips).
        seed: the seed of everything random (split, parameters, effects).
        sample_rate, seconds: output format (SC09: 16000 Hz, 1 s).
        num_val, num_test: voices held out for validation and test.
        max_voices: use only this many voices (for tests), chosen with ``seed``.
        workers: parallel espeak-ng processes (does not change the output).
    """
    import soundfile as sf
    import torchaudio.transforms as T

    from domains.audio.espeak import ACCENTS, ESPEAK_RATE, synthesize, variants

    t0 = time.perf_counter()
    speakers = variants()
    if max_voices is not None:
        keep = _rng(seed, "voices").permutation(len(speakers))[:max_voices]
        speakers = sorted(speakers[i] for i in keep)
    splits = split_speakers(speakers, seed, num_val, num_test)
    length = int(round(seconds * sample_rate))
    # one job list per speaker, synthesised in its own process (deterministic)
    plans, groups = [], []
    for speaker in speakers:
        plan, jobs = [], []
        for digit in DIGITS:
            for n in range(per_voice):
                r = _rng(seed, speaker, digit, n)
                p = {"digit": digit, "n": n, "accent": ACCENTS[r.integers(len(ACCENTS))],
                     "rate": int(r.integers(120, 231)), "pitch": int(r.integers(20, 81)),
                     "pitch_range": int(r.integers(20, 81)), "peak": float(r.uniform(0.3, 0.9)),
                     "snr_db": float(r.uniform(25, 50)), "place": float(r.uniform()),
                     "noise_seed": int(r.integers(2**31))}
                plan.append(p)
                jobs.append({"text": digit, "voice": f"{p['accent']}+{speaker}",
                             "rate": p["rate"], "pitch": p["pitch"],
                             "pitch_range": p["pitch_range"], "seed": p["noise_seed"]})
        plans.append(plan)
        groups.append(jobs)
    # 8 speakers per espeak process: fewer process starts, still independent of `workers`
    per = 8
    merged = synthesize([sum(groups[i:i + per], []) for i in range(0, len(groups), per)],
                        workers=workers)
    flat = [c for part in merged for c in part]
    clips = [flat[i * len(DIGITS) * per_voice:(i + 1) * len(DIGITS) * per_voice]
             for i in range(len(speakers))]
    resampler = T.Resample(ESPEAK_RATE, sample_rate)

    out_dir = Path(out_dir)
    split_of = {s: k for k, names in splits.items() for s in names}
    rows, counts, cropped = [], {k: 0 for k in SPLITS}, 0
    from diffplat.progress import bar

    for speaker, plan, raw in bar(list(zip(speakers, plans, clips)), desc="resampling voices",
                                  unit="voice"):
        # trim silence, then resample the speaker's clips as one zero-padded batch
        trimmed = [_trim(c.astype(np.float32) / 32768.0) for c in raw]
        batch = np.zeros((len(trimmed), max(len(x) for x in trimmed)), np.float32)
        for i, x in enumerate(trimmed):
            batch[i, :len(x)] = x
        with torch.no_grad():
            resampled = resampler(torch.from_numpy(batch)).numpy()
        for i, p in enumerate(plan):
            y = resampled[i, :-(-len(trimmed[i]) * sample_rate // ESPEAK_RATE)]
            if len(y) == 0:
                raise RuntimeError(f"espeak-ng produced silence for {p['digit']!r} "
                                   f"({p['accent']}+{speaker})")
            cropped += len(y) > length  # longer than the clip: keep its start
            y = y[:length] * (p["peak"] / max(float(np.abs(y).max()), 1e-9))
            start = int(p["place"] * (length - len(y)))
            wave = np.zeros(length, np.float32)
            wave[start:start + len(y)] = y
            noise = np.random.default_rng(p["noise_seed"]).standard_normal(length)
            rms = float(np.sqrt(np.mean(y ** 2)))
            wave += (rms * 10 ** (-p["snr_db"] / 20) * noise).astype(np.float32)
            wave = np.clip(wave, -1.0, 32767 / 32768)
            split = split_of[speaker]
            path = out_dir / split / p["digit"] / f"{_safe(speaker)}_{p['n']:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave, sample_rate, subtype="PCM_16")
            counts[split] += 1
            rows.append({"path": str(path.relative_to(out_dir)), "split": split,
                         "label": p["digit"], "speaker": speaker, "accent": p["accent"],
                         "rate_wpm": p["rate"], "pitch": p["pitch"],
                         "pitch_range": p["pitch_range"], "peak": round(p["peak"], 4),
                         "snr_db": round(p["snr_db"], 2), "start": start,
                         "word_samples": len(y)})
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    info = out_dir / "info.json"
    info.write_text(json.dumps({
        "dataset": "diffplat spoken digits (espeak-ng)", "classes": list(DIGITS),
        "sample_rate": sample_rate, "seconds": seconds, "seed": seed, "per_voice": per_voice,
        "counts": counts, "words_cropped": cropped, "voices": splits,
        "seconds_to_prepare": round(time.perf_counter() - t0, 1)}, indent=2))
    return [out_dir / s for s in SPLITS] + [manifest, info]
