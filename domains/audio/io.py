"""Audio samples on disk and on screen: WAV files with a labels CSV, spectrogram grids."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from domains.audio.data import AUDIO_SUFFIXES, fit_length, read_audio

LABELS_FILE = "labels.csv"


def write_clips(samples, out_dir: Path, classes: list[str] | None) -> list[Path]:
    """``sample_00000.wav``... (16-bit PCM, clipped to [-1, 1)) and ``labels.csv`` (file,
    label index, label name; empty for unconditional samples)."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    audio = samples.audio.detach().cpu().float()
    paths, rows = [], []
    for i, clip in enumerate(audio):
        path = out_dir / f"sample_{i:05d}.wav"
        sf.write(path, clip.reshape(-1).clamp(-1, 32767 / 32768).numpy(), samples.sample_rate,
                 subtype="PCM_16")
        paths.append(path)
        label = None if samples.labels is None else int(samples.labels[i])
        name = classes[label] if label is not None and classes and label < len(classes) else ""
        rows.append({"file": path.name, "label": "" if label is None else label, "name": name})
    table = out_dir / LABELS_FILE
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "name"])
        writer.writeheader()
        writer.writerows(rows)
    return [*paths, table]


def read_clips(path: Path, sample_rate: int, length: int, classes: list[str] | None):
    """A folder of audio files (e.g. written by ``write_clips``) or one file as ``Clips``;
    labels come from ``labels.csv`` when it lists every file."""
    from domains.audio.domain import Clips

    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    else:
        raise FileNotFoundError(f"no audio at {path}")
    if not files:
        raise FileNotFoundError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    audio = torch.stack([fit_length(read_audio(f, sample_rate), length) for f in files])[:, None]
    labels = None
    table = (path if path.is_dir() else path.parent) / LABELS_FILE
    if table.is_file():
        with table.open() as f:
            known = {r["file"]: r["label"] for r in csv.DictReader(f)}
        if all(known.get(f.name, "") != "" for f in files):
            labels = torch.tensor([int(known[f.name]) for f in files])
    return Clips(audio, labels, sample_rate)


def wandb_clips(samples, classes: list[str], num: int = 8) -> list:
    """The first ``num`` clips as wandb.Audio, captioned with their index and label."""
    import wandb

    clips = []
    for i, clip in enumerate(samples.audio[:num].detach().cpu().float()):
        caption = f"#{i}"
        if samples.labels is not None:
            lab = int(samples.labels[i])
            caption += f" {classes[lab] if lab < len(classes) else lab}"
        clips.append(wandb.Audio(clip.reshape(-1).numpy(), sample_rate=samples.sample_rate,
                                 caption=caption))
    return clips


def spectrogram_grid(samples, path: Path, classes: list[str] | None, num: int = 16,
                     cols: int = 4) -> Path:
    """A PNG grid of log-magnitude spectrograms of the first ``num`` clips, titled with
    their labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    audio = samples.audio[:num].detach().cpu().float().reshape(min(num, len(samples)), -1)
    rows = -(-len(audio) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), dpi=80, squeeze=False)
    n_fft = 512
    window = torch.hann_window(n_fft)
    for ax in axes.flat:
        ax.axis("off")
    for i, clip in enumerate(audio):
        spec = torch.stft(clip, n_fft, n_fft // 4, window=window, return_complex=True).abs()
        db = 20 * torch.log10(spec + 1e-5)
        ax = axes.flat[i]
        ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma",
                  vmin=float(db.max()) - 80, vmax=float(db.max()),
                  extent=(0, len(clip) / samples.sample_rate, 0, samples.sample_rate / 2000))
        title = f"#{i}"
        if samples.labels is not None:
            lab = int(samples.labels[i])
            title += f" {classes[lab] if classes and lab < len(classes) else lab}"
        kept = getattr(samples, "kept", None)
        if kept is not None:  # inpainting: outline the kept time ranges
            k = kept[i].reshape(-1).to(torch.int8)
            edges = torch.nonzero(torch.diff(torch.cat([k.new_zeros(1), k, k.new_zeros(1)])))
            for a, b in edges.reshape(-1, 2).tolist():
                ax.axvspan(a / samples.sample_rate, b / samples.sample_rate, color="cyan",
                           alpha=0.18, lw=0)
            title += " (shaded: kept)"
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{len(audio)} of {len(samples)} clips (log spectrogram, 0-"
                 f"{samples.sample_rate // 2000} kHz)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
