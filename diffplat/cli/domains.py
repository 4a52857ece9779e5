"""Known domains for ``diffplat data`` (a domain lives in domains/<name>/)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from diffplat.registry import Registry

registry: Registry[str] = Registry("domain")
registry.register("toy", "domains.toy.domain:ToyDomain")
registry.register("qm9", "domains.molecules.domain:MoleculeDomain")
registry.register("shapes", "domains.shapes.domain:ShapeDomain")
registry.register("digits", "domains.audio.domain:AudioDomain")
registry.register("audio", "domains.audio.domain:AudioDomain")


def domain_class(name: str):
    module, cls = registry.get(name).split(":")
    return getattr(importlib.import_module(module), cls)


def instantiate_domain(cfg: dict[str, Any]):
    """A Domain from its ``{"class_path": ..., "init_args": {...}}`` configuration."""
    from jsonargparse import ArgumentParser

    from diffplat.domain import Domain

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Domain, "domain")
    return parser.instantiate_classes(parser.parse_object({"domain": cfg})).domain


def prepare_options(name: str) -> list[str]:
    sig = inspect.signature(domain_class(name).prepare)
    return [f"{p.name}={p.default!r}" for p in sig.parameters.values()
            if p.name not in ("out_dir", "cls") and p.default is not inspect.Parameter.empty]
