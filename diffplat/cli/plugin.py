"""The command-line API for domain plug-ins: what a domain's own commands (``DomainPlugin
.commands`` and ``evaluators``) may import from ``diffplat.cli``. Everything here is public
and kept stable; the other modules of ``diffplat.cli`` are the core's own and may change.

Flags from a domain's declared sampling options (``diffplat.domain_options``):
    ``add_option_flags(parser, options, names)`` adds them (``--smiles`` repeatable,
    ``--mmff`` a switch, ``--noise-level T`` typed); ``check_option_flags(parser, args,
    options, names)`` checks the parsed values against the declaration (``parser.error``
    naming the flag).
The sampling flags of ``diffplat sample`` and drawing with them:
    ``add_sampling_args(parser, required=True)`` adds ``--ckpt/--model/-c``, ``--num``,
    ``--sampler``, ``--steps``, ``--nfe``, ``--prior KEY=VALUE`` and the rest;
    ``generate(args)`` loads the model they name and samples as ``diffplat sample`` does
    (returns ``(model, samples, stats)``); ``model_source(args)`` is the path they name.
Reading what other commands wrote:
    ``read_card(path)``: an export folder's model card (``card.json``) or None;
    ``domain_from_samples(folder)``: the domain that wrote a ``diffplat sample`` folder;
    ``domain_from_config(path)``: the domain of a training config.
Small helpers:
    ``parse_options(["k=v", ...])`` (YAML-typed ``KEY=VALUE`` pairs), ``resolve_device(name)``
    (``--device``), ``usage_error(prog, message)`` (one line, exit status 2).

The imports stay lazy where they would load torch, so a plug-in's ``--help`` is quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffplat.cli.options import parse_options, resolve_device, usage_error
from diffplat.domain_options import SamplingOption, add_option_flags, check_option_flags

__all__ = ["SamplingOption", "add_option_flags", "add_sampling_args", "check_option_flags",
           "domain_from_config", "domain_from_samples", "generate", "model_source",
           "parse_options", "read_card", "resolve_device", "usage_error"]


def add_sampling_args(parser, required: bool = True) -> None:
    """``diffplat sample``'s sampling flags on ``parser`` (``required``: the model flags
    must name a model)."""
    from diffplat.cli.sample import add_sampling_args as add

    add(parser, required)


def generate(args) -> tuple[Any, Any, dict[str, Any]]:
    """Sample as ``diffplat sample`` does with the flags of ``add_sampling_args``: the
    domain's ``--prior`` options checked against its declaration. Returns (model,
    samples, stats)."""
    from diffplat.cli.sample import generate as draw

    return draw(args)


def model_source(args) -> str | Path | None:
    """The checkpoint or export that ``--ckpt``, ``--model`` or ``-c`` names."""
    from diffplat.cli.sample import model_source as source

    return source(args)


def read_card(path: str | Path) -> dict[str, Any] | None:
    """The model card of an export folder, or None (a checkpoint has none)."""
    from diffplat.cli.sample import read_card as read

    return read(path)


def domain_from_samples(folder: str | Path, data: str | None = None):
    """The domain that wrote a ``diffplat sample`` folder, under the trust rule."""
    from diffplat.cli.evaluate import domain_from_samples as read

    return read(Path(folder), data)


def domain_from_config(path: str | Path, data: str | None = None):
    """The domain of a training config's ``model.domain``."""
    from diffplat.cli.evaluate import domain_from_config as read

    return read(Path(path), data)
