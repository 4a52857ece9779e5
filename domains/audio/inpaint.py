"""Inpainting and continuation of audio (``diffplat sample --inpaint FILE --mask SPEC``):
the kept time ranges, and which label a class-conditional continuation gets."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import Tensor

from domains.audio.io import LABELS_FILE


def kept_samples(mask: str, seconds: float, sample_rate: int) -> Tensor:
    """The mask [round(seconds * sample_rate)], 1 where the source is kept. ``mask`` lists
    the KEPT time ranges in seconds, ``start:end`` with either end optional, comma
    separated: "0:0.5" continues the first half, "0.5:" generates a beginning for the
    second half, "0:0.25,0.75:" fills the middle."""
    keep = torch.zeros(int(round(sample_rate * seconds)))
    for part in str(mask).split(","):
        if ":" not in part:
            raise ValueError(f"--mask {mask!r}: give kept time ranges in seconds such as "
                             "0:0.5 or 0:0.25,0.75:")
        a, b = part.split(":", 1)
        try:
            start = float(a) if a.strip() else 0.0
            end = float(b) if b.strip() else seconds
        except ValueError:
            raise ValueError(f"--mask {mask!r}: {part!r} is not start:end in seconds") from None
        if not 0 <= start < end:
            raise ValueError(f"--mask {mask!r}: {part!r} needs 0 <= start < end")
        keep[int(round(start * sample_rate)):int(round(end * sample_rate))] = 1
    return keep


def source_label(path: Path, names: list[str]) -> tuple[int, str] | None:
    """(class index, where it came from) of an audio file: ``labels.csv`` in its folder
    (written by ``diffplat sample``) when it lists the file, else its folder's name when
    that is a class (the ``<label>/*.wav`` layout); None when neither says."""
    table = path.parent / LABELS_FILE
    if table.is_file():
        with table.open() as f:
            for row in csv.DictReader(f):
                if row.get("file") == path.name and row.get("name") in names:
                    return names.index(row["name"]), f"{table.name} beside it"
    if path.parent.name in names:
        return names.index(path.parent.name), "its folder's name"
    return None


def keep_source_label(path: Path, names: list[str], labels: Tensor, note) -> None:
    """For a continuation asked for no label: set ``labels`` (in place) to the source's
    label when it is known and say so through ``note``; otherwise leave them (the classes
    in turn) and say that the label is free."""
    found = source_label(path, names)
    if found is None:
        note(f"--inpaint: the label of {path.name} is unknown, so the label is free: the "
             f"samples take the classes in turn ({', '.join(names[:3])}, ...); give "
             "--prior label=NAME to choose one")
        return
    index, origin = found
    labels.fill_(index)
    note(f"--inpaint: the samples keep the source's label {names[index]!r} (from {origin}); "
         "give --prior label=NAME for another")
