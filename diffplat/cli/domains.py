"""The installed domains, as the CLI uses them (``diffplat.plugins`` finds them)."""

from __future__ import annotations

import inspect
from typing import Any

from diffplat import plugins


def domain_class(name: str):
    """The Domain class of a domain name or alias (unknown names list the valid ones)."""
    return plugins.find(name).domain_class()


def instantiate_domain(cfg: dict[str, Any]):
    """A Domain from its ``{"class_path": ..., "init_args": {...}}`` configuration."""
    from jsonargparse import ArgumentParser

    from diffplat.domain import Domain

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Domain, "domain")
    return parser.instantiate_classes(parser.parse_object({"domain": cfg})).domain


def prepare_options(name: str) -> list[str]:
    """``key=default`` of each option of the domain's ``prepare`` (imports the domain)."""
    sig = inspect.signature(domain_class(name).prepare)
    return [f"{p.name}={p.default!r}" for p in sig.parameters.values()
            if p.name not in ("out_dir", "cls") and p.default is not inspect.Parameter.empty]
