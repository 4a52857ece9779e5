"""The conformer domain's sampling options, declared once (``diffplat.domain_options``):
``ConformerDomain.sampling_options`` for ``Pipeline.sample(num, **options)`` and ``diffplat
sample --prior KEY=VALUE``, and the flags of ``diffplat conformers`` and ``diffplat evaluate
conformers``. Imports nothing heavy, so the commands' ``--help`` stays quick."""

from __future__ import annotations

from typing import Any

from diffplat.checks import positive_int
from diffplat.domain_options import SamplingOption


def _schedule_time(value: Any, label: str) -> None:
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{label} must be in (0, 1], got {value}")


#: How refinement starts are made (``refine_from``): RDKit's ETKDGv3.
START_METHODS = ("etkdg",)

SAMPLING_OPTIONS = (
    SamplingOption("smiles", str, many=True, metavar="SMILES",
                   help="the molecules to draw conformers of: a SMILES or a list of them "
                        "(hydrogens are added after the heavy atoms); no data needed"),
    SamplingOption("copies", int, check=positive_int,
                   help="conformers of each molecule (default: num / number of molecules "
                        "with smiles, else 1)"),
    SamplingOption("split", str, choices=("train", "val", "test"),
                   help="without smiles: draw conformers of this split's molecules (default: "
                        "the domain's sample_split)"),
    SamplingOption("graphs", list, help="Python only: one conformer of each MolGraph"),
    SamplingOption("allow_out_of_range", bool,
                   help="run molecules outside the model's training range (atoms, elements, "
                        "rings...) with a warning instead of refusing them"),
    SamplingOption("refine_from", str, choices=START_METHODS, metavar="METHOD",
                   help="refine conformers that RDKit's ETKDG makes instead of generating "
                        "from noise: each start is noised to noise_level and denoised from "
                        "there (SDEdit, Meng et al. 2022); ETKDG's time is counted in the "
                        "model's"),
    SamplingOption("noise_level", float, check=_schedule_time, metavar="T",
                   help="with refine_from: schedule time in (0, 1] of the start (1: from the "
                        "top, as ordinary sampling); default: the model card's"),
    SamplingOption("mmff", bool,
                   help="with refine_from: relax each ETKDG start with MMFF94 first"),
)
