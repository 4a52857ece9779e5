"""Waveform generation as a Domain: spoken digits (SC09-style) or any folder of sounds."""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from diffplat.domain import SPLITS, Domain, Draw, SamplingOption
from diffplat.noise import GaussianNoise
from domains.audio.data import (
    WavFolder,
    find_classes,
    fit_length,
    folder_rates,
    random_splits,
    read_audio,
)


@dataclass
class Clips:
    """Audio samples: ``audio`` [N, 1, T] in [-1, 1] at ``sample_rate`` and, for labelled
    or class-conditional samples, the class index of each clip (``labels`` [N])."""

    audio: Tensor
    labels: Tensor | None
    sample_rate: int
    #: for inpainted clips, [N, T] True where the input was kept (previews shade it)
    kept: Tensor | None = None

    def __len__(self) -> int:
        return len(self.audio)


class _Indexed(Dataset):
    """(wave, label, index): the index makes label dropout a function of the batch."""

    def __init__(self, data: Dataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        wave, label = self.data[i]
        return wave, label, torch.tensor(i)


class AudioDomain(Domain):
    """Mono waveforms of fixed length, unconditional or conditioned on a class label.

    Args:
        data_path: a folder with ``train/``, ``val/``, ``test/`` sub-folders in the
            ``<label>/*.wav`` layout (``diffplat data prepare digits``, or SC09 as
            distributed); a folder without them is split at random (90/5/5, ``split_seed``).
        sample_rate: model rate in Hz; None (the default) follows the data: the most common
            rate of the training files. Files at other rates are resampled, with a one-line
            note naming the two rates. Checkpoints and exports store the rate, so samples
            are written at it without the data.
        seconds: clip length; longer files are cut (``crop``), shorter ones zero-padded.
        classes: label names in index order (default: the sub-folder names, digits in
            numeric order).
        conditional: class-conditional model (the backbone needs ``num_classes``).
        label_dropout: probability of replacing a label by the null class in training
            (classifier-free guidance, Ho & Salimans 2022).
        gain: the model sees ``gain * wave``; samples are divided by it.
        crop, resample, skip_bad: see ``domains.audio.data.WavFolder``.
        max_items: at most this many clips per class and split (quick runs).
        split_seed: seed of the random split of a folder without split sub-folders.
        classifier: a ``DigitClassifier`` checkpoint trained on the data's classes; it adds
            DiffWave's metrics to the label-free ones (domains/audio/scoring.py).
        fid_reference: split whose classifier features FID, NDB and AM compare with
            (DiffWave: the training set).
        ndb_bins: K of NDB.
    """

    name = "audio"
    default_data_dir = "data/digits"
    eval_options = ("data_path", "classifier", "fid_reference", "ndb_bins", "skip_bad",
                    "max_items")
    sampling_options = (SamplingOption(
        "label", (str, int), metavar="LABEL",
        help="a class-conditional model's class, by name (three) or index (3); default: the "
             "classes in turn"),)

    def __init__(self, data_path: str = "data/digits", sample_rate: int | None = None,
                 seconds: float = 1.0, classes: list[str] | None = None,
                 conditional: bool = False, label_dropout: float = 0.1, gain: float = 1.0,
                 crop: str = "start", resample: bool = True, skip_bad: bool = False,
                 max_items: int | None = None, split_seed: int = 0,
                 classifier: str | None = None, fid_reference: str = "train",
                 ndb_bins: int = 50):
        if fid_reference not in SPLITS:
            raise ValueError(f"fid_reference must be one of {', '.join(SPLITS)}")
        if sample_rate is not None and sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz or null (follow the "
                             f"data), got {sample_rate}")
        self.data_path, self._sample_rate, self.seconds = data_path, sample_rate, seconds
        self._mix_named = False  # _rate_of_data said that the files' rates differ
        #: the training data's own (most common) rate, once known
        self.data_rate: int | None = None
        self.classes = list(classes) if classes else None
        self.conditional, self.label_dropout, self.gain = conditional, label_dropout, gain
        self.crop, self.resample, self.skip_bad = crop, resample, skip_bad
        self.max_items, self.split_seed = max_items, split_seed
        self.classifier, self.fid_reference, self.ndb_bins = classifier, fid_reference, ndb_bins
        self.stage: str | None = None
        self._splits: dict[str, Dataset] | None = None
        self._scorer = None
        self._notes: set[str] = set()
        self._asked_label: Any = None

    def _note(self, text: str) -> None:
        """One line on stderr, once per domain object."""
        if text not in self._notes:
            self._notes.add(text)
            print(f"diffplat: note: {text}", file=sys.stderr)

    # -- the sample rate ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The model's rate in Hz: the configured one, the one a checkpoint stored, or (for
        ``sample_rate: null``) the most common rate of the training files."""
        if self._sample_rate is None:
            self._sample_rate = self._rate_of_data()
        return self._sample_rate

    @sample_rate.setter
    def sample_rate(self, value: int) -> None:
        self._sample_rate = int(value)

    @property
    def length(self) -> int:
        return int(round(self.sample_rate * self.seconds))

    def _rate_of_data(self) -> int:
        root = Path(self.data_path)
        folder = root / "train" if (root / "train").is_dir() else root
        rates = folder_rates(folder) if folder.is_dir() else None
        if not rates:
            raise FileNotFoundError(
                f"sample_rate: null takes the rate of the data, but {folder} holds no audio "
                "files; give the domain's sample_rate in Hz")
        rate = rates.most_common(1)[0][0]
        if len(rates) > 1:
            self._note(f"{folder}: clips at " + ", ".join(
                f"{r} Hz ({n})" for r, n in sorted(rates.items()))
                + f": sample_rate follows the most common, {rate} Hz; the others are resampled")
            self._mix_named = True
        self.data_rate = rate
        return rate

    # -- data ---------------------------------------------------------------------------------
    def _folder(self, path: Path) -> WavFolder:
        data = WavFolder(path, self.sample_rate, self.length, self.classes, self.crop,
                         self.resample, self.skip_bad, self.max_items)
        if data.skipped:
            print(f"diffplat: {path}: skipped {data.skipped} bad audio files, e.g. "
                  f"{data.bad[0]}", file=sys.stderr)
        self.classes = data.classes
        return data

    def setup(self, stage: str = "fit") -> None:
        self.stage = stage
        if self._splits is not None:
            return
        root = Path(self.data_path)
        if not root.is_dir():
            raise FileNotFoundError(f"audio data folder not found: {root} (create the digits "
                                    f"with `diffplat data prepare digits --out {root}`)")
        if (root / "train").is_dir():
            self._splits = {s: self._folder(root / s) for s in SPLITS if (root / s).is_dir()}
            self._splits.setdefault("val", self._splits.get("test", self._splits["train"]))
            self._splits.setdefault("test", self._splits["val"])
        else:
            self._splits = random_splits(self._folder(root), self.split_seed)
        self.skipped = sum(getattr(d, "skipped", 0) for d in self._splits.values())
        self._name_the_rates(root)

    def _name_the_rates(self, root: Path) -> None:
        """Say in one line when the files are not at the model's rate (they are resampled
        when loaded, and samples come out at the model's rate)."""
        folders = [getattr(d, "dataset", d) for d in self._splits.values()]
        rates = Counter()
        for d in {id(d): d for d in folders}.values():
            rates.update(getattr(d, "rates", {}))
        if not rates:
            return
        self.data_rate = rates.most_common(1)[0][0]
        other = sorted(r for r in rates if r != self.sample_rate)
        if other and not self._mix_named:
            self._note(f"{root}: the clips are at {', '.join(f'{r} Hz' for r in other)}, the "
                       f"model's sample_rate is {self.sample_rate} Hz: they are resampled to "
                       f"{self.sample_rate} Hz when loaded and samples are written at "
                       f"{self.sample_rate} Hz (sample_rate: null follows the data)")

    def split(self, name: str) -> Dataset:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits: {', '.join(SPLITS)}")
        if self._splits is None:
            self.setup(self.stage or "test")
        return self._splits[name]

    def train_dataset(self):
        return _Indexed(self.split("train"))

    def val_dataset(self):
        return _Indexed(self.split("val"))

    def test_dataset(self):
        return _Indexed(self.split("test"))

    def class_names(self) -> list[str]:
        """The label names; without ``classes`` in the config, the sub-folder names of the
        training data (a directory scan: sampling does not load the data)."""
        if self.classes is None:
            root = Path(self.data_path)
            folder = root / "train" if (root / "train").is_dir() else root
            if not folder.is_dir():
                raise FileNotFoundError(f"the class names come from the data folder {folder}, "
                                        "which is missing; give them as the domain's classes")
            self.classes = find_classes(folder) or [folder.name]
        return self.classes

    @property
    def num_classes(self) -> int:
        return len(self.class_names())

    def assets(self) -> dict[str, Path]:
        """The digit classifier the metrics use, so an export scores as it was measured."""
        if self.classifier and Path(self.classifier).is_file():
            return {"classifier": Path(self.classifier)}
        return {}

    def sampling_state(self) -> dict[str, Any]:
        """The class names (conditional models), the model's rate and the data's own."""
        state: dict[str, Any] = {"sample_rate": int(self.sample_rate)}
        if self.data_rate is not None:
            state["data_rate"] = int(self.data_rate)
        if self.conditional or self.classes is not None:
            state["classes"] = list(self.class_names())
        return state

    def load_sampling_state(self, state: dict[str, Any]) -> None:
        if self.classes is None and state.get("classes"):
            self.classes = list(state["classes"])
        if self._sample_rate is None and state.get("sample_rate"):
            self._sample_rate = int(state["sample_rate"])
        if state.get("data_rate"):
            self.data_rate = int(state["data_rate"])

    def backbone_sizes(self) -> dict[str, Any]:
        """``num_classes`` of a class-conditional model (its null class is one more)."""
        return {"num_classes": self.num_classes} if self.conditional else {}

    def unpack(self, batch):
        """(wave [B, 1, T], label [B], index [B]) -> (gain * wave, {"labels"}, noise).

        In training (gradients on), each label is replaced by the null class (index
        ``num_classes``) with probability ``label_dropout``, drawn from a generator seeded by
        the batch's item indices, so an exactly resumed run drops the same labels."""
        wave, labels, index = batch
        cond: dict[str, Any] = {}
        if self.conditional:
            labels = labels.clone()
            if torch.is_grad_enabled() and self.label_dropout > 0:
                seed = int.from_bytes(hashlib.blake2b(index.cpu().numpy().tobytes(),
                                                      digest_size=8).digest(), "little") >> 2
                gen = torch.Generator().manual_seed(seed)
                drop = torch.rand(len(labels), generator=gen) < self.label_dropout
                labels[drop.to(labels.device)] = self.num_classes
            cond["labels"] = labels
        return wave * self.gain, cond, GaussianNoise()

    # -- sampling -----------------------------------------------------------------------------
    def label_index(self, label: Any) -> int:
        """A class index from an index (3) or a name ("three")."""
        names = self.class_names()
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in names:
                raise ValueError(f"unknown label {label!r}; labels: {', '.join(names)}")
            return names.index(label)
        index = int(label)
        if not 0 <= index < self.num_classes:
            raise ValueError(f"label {index} outside 0..{self.num_classes - 1} "
                             f"({', '.join(names)})")
        return index

    def prior(self, num, generator, device="cpu", label=None, **options):
        """Noise [num, 1, T]; a conditional model gets ``label`` (``--prior label=3`` or
        ``label=three``) or, by default, the classes in turn (0, 1, ..., 0, 1, ...)."""
        if options:
            raise ValueError(f"unknown audio sampling options {sorted(options)}; valid: label")
        self._asked_label = label  # inpaint_source keeps the source's label when None
        noise = torch.randn(num, 1, self.length, generator=generator, device=device)
        if not self.conditional:
            if label is not None:
                raise ValueError("--prior label=... needs a class-conditional model "
                                 "(domain conditional: true)")
            return Draw(noise, {}, GaussianNoise())
        if label is None:
            labels = torch.arange(num, device=device) % self.num_classes
        else:
            labels = torch.full((num,), self.label_index(label), device=device)
        return Draw(noise, {"labels": labels}, GaussianNoise())

    def null_condition(self, cond):
        if "labels" not in cond:
            raise ValueError("classifier-free guidance needs a class-conditional model")
        return {"labels": torch.full_like(cond["labels"], self.num_classes)}

    def inpaint_source(self, path, mask, like, cond):
        """Keep part of the clip at ``path`` and generate the rest; ``mask`` lists the KEPT
        time ranges in seconds (``domains.audio.inpaint.kept_samples``: "0:0.5" continues
        the first half).

        A class-conditional model asked for no label continues the source with the
        source's label when it is known (its folder is a class name, or ``labels.csv`` beside
        it lists it): ``cond["labels"]`` is set in place, and a note says so; otherwise a
        note says that the label is free (the classes in turn)."""
        from domains.audio.inpaint import keep_source_label, kept_samples

        if "labels" in cond and self._asked_label is None:
            keep_source_label(Path(path), self.class_names(), cond["labels"], self._note)
        wave = fit_length(read_audio(Path(path), self.sample_rate, self.resample),
                          self.length, self.crop)
        keep = kept_samples(mask, self.seconds, self.sample_rate)[:self.length]
        known = (wave * self.gain).to(like)[None, None].expand_as(like).clone()
        return known, keep.to(like)[None, None]

    def decode(self, x0, cond, meta=None):
        labels = cond.get("labels")
        kept = (meta or {}).get("kept")
        return Clips(x0 / self.gain, None if labels is None else labels.cpu(),
                     self.sample_rate, None if kept is None else kept[:, 0])

    def concat(self, parts):
        labels = [p.labels for p in parts]
        kept = [p.kept for p in parts]
        return Clips(torch.cat([p.audio for p in parts]),
                     None if any(x is None for x in labels) else torch.cat(labels),
                     parts[0].sample_rate,
                     None if any(k is None for k in kept) else torch.cat(kept))

    # -- scoring ------------------------------------------------------------------------------
    def reference(self, num, split="test"):
        data = self.split(split)
        if num > len(data):
            raise ValueError(f"the {split} split holds {len(data)} clips, asked for {num}")
        # an even spread over the split (its files are sorted by class)
        idx = torch.linspace(0, len(data) - 1, num).round().long().unique().tolist()
        items = [data[i] for i in idx]
        return Clips(torch.stack([w for w, _ in items]),
                     torch.stack([torch.as_tensor(lab) for _, lab in items]), self.sample_rate)

    def metrics(self, samples, split="test"):
        from domains.audio.scoring import score

        return score(self, samples, split)

    # -- files --------------------------------------------------------------------------------
    def write(self, samples, out_dir):
        from domains.audio.io import write_clips

        if self.data_rate and self.data_rate != samples.sample_rate:
            self._note(f"the clips are written at {samples.sample_rate} Hz, the model's rate; "
                       f"its training data were at {self.data_rate} Hz")
        return write_clips(samples, Path(out_dir),
                           self.class_names() if samples.labels is not None else None)

    def read(self, path):
        from domains.audio.io import read_clips

        return read_clips(Path(path), self.sample_rate, self.length, self.classes)

    def preview(self, samples, path):
        from domains.audio.io import spectrogram_grid

        return spectrogram_grid(samples, Path(path),
                                self.class_names() if samples.labels is not None else None)

    def media(self, samples, num: int = 8):
        """The first ``num`` clips as playable wandb.Audio, captioned with their label."""
        from domains.audio.io import wandb_clips

        return {"audio": wandb_clips(samples, self.classes or [], num)}

    @classmethod
    def prepare(cls, out_dir, per_voice: int = 4, seed: int = 0, sample_rate: int = 16000,
                seconds: float = 1.0, num_val: int = 12, num_test: int = 12,
                max_voices: int | None = None, workers: int = 2):
        """The spoken-digits set (domains/audio/digits.py)."""
        from domains.audio.digits import prepare_digits

        return prepare_digits(Path(out_dir), per_voice, seed, sample_rate, seconds, num_val,
                              num_test, max_voices, workers)

    @classmethod
    def describe(cls, path):
        from domains.audio.data import describe_folder

        return describe_folder(Path(path))
