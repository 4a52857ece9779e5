"""The installed domains, as the CLI uses them (``diffplat.plugins`` finds them)."""

from __future__ import annotations

import inspect

from diffplat import plugins
from diffplat.plugins import instantiate_domain

__all__ = ["domain_class", "instantiate_domain", "prepare_options"]


def domain_class(name: str):
    """The Domain class of a domain name or alias (unknown names list the valid ones)."""
    return plugins.find(name).domain_class()


def prepare_options(name: str) -> list[str]:
    """``key=default`` of each option of the domain's ``prepare`` (imports the domain)."""
    sig = inspect.signature(domain_class(name).prepare)
    return [f"{p.name}={p.default!r}" for p in sig.parameters.values()
            if p.name not in ("out_dir", "cls") and p.default is not inspect.Parameter.empty]
