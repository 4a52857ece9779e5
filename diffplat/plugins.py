"""Domains plug in through the package entry-point group ``diffplat.domains``.

A domain package declares one ``DomainPlugin`` and names it in its ``pyproject.toml``:

.. code-block:: toml

    [project.entry-points."diffplat.domains"]
    rings = "rings_domain:PLUGIN"

Once the package is installed (``pip install``), the domain appears in ``diffplat --help``,
``diffplat data prepare|info``, its extra commands (if any) and ``diffplat compare``, and the
classes of its package may be named by stored configurations (the trust rule of
``diffplat.store``). Nothing in ``diffplat/`` names a domain: the domains of
this repository register the same way (pyproject.toml). The module holding ``PLUGIN`` should
import little (the CLI loads every plugin to print its help): the ``Domain`` class is named
by a string and imported only when used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from diffplat.registry import UnknownNameError

GROUP = "diffplat.domains"


@dataclass(frozen=True)
class DomainPlugin:
    """A domain's declaration to the core.

    Args:
        name: the domain's name (``diffplat data prepare NAME``, error messages).
        domain: ``"module:Class"`` of its ``diffplat.domain.Domain`` subclass.
        summary: one line for ``diffplat --help``.
        aliases: other names for ``data prepare|info`` (e.g. the dataset's name).
        mask_help: the ``--mask`` syntax of ``diffplat sample --inpaint`` in this domain.
        prepare_help: what ``data prepare NAME`` builds, for ``data prepare --help``.
        commands: extra ``diffplat`` sub-commands, name -> ``"module:function"`` taking the
            argument list and returning an exit status.
        evaluators: ``diffplat evaluate NAME ...`` modes, name -> ``"module:function"``.
        command_help: one line per extra command, for ``diffplat --help``.
        extra: the pip extra that installs the domain's libraries (for the fix that a
            failed import suggests); default: the domain's name.
        backbones: ``"module:Class"`` of the domain's backbones (``diffplat.backbone.Backbone``
            subclasses), listed by ``diffplat fit --help``.
    """

    name: str
    domain: str
    summary: str = ""
    aliases: tuple[str, ...] = ()
    mask_help: str = ""
    prepare_help: str = ""
    commands: Mapping[str, str] = field(default_factory=dict)
    evaluators: Mapping[str, str] = field(default_factory=dict)
    command_help: Mapping[str, str] = field(default_factory=dict)
    extra: str = ""
    backbones: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        """The top-level package of the domain's code (trusted in stored configurations)."""
        return self.domain.split(":")[0].split(".")[0]

    def domain_class(self) -> type:
        return load_object(self.domain)


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports`` (name -> module) on first use, so
    a domain package's ``__init__`` (which holds its PLUGIN) stays cheap to import."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def load_object(ref: str) -> Any:
    """``"package.module:attr"`` -> the object (imported now)."""
    module, _, attr = ref.partition(":")
    if not attr:
        module, _, attr = ref.rpartition(".")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@lru_cache(maxsize=1)
def plugins() -> dict[str, DomainPlugin]:
    """Every installed domain, by name (entry-point order, first one wins)."""
    found: dict[str, DomainPlugin] = {}
    for ep in metadata.entry_points(group=GROUP):
        try:
            plugin = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin must not break the CLI
            print(f"diffplat: the domain plug-in {ep.name!r} ({ep.value}) does not load: "
                  f"{type(err).__name__}: {err}", file=sys.stderr)
            continue
        if not isinstance(plugin, DomainPlugin):
            print(f"diffplat: entry point {ep.name!r} ({ep.value}) is not a DomainPlugin",
                  file=sys.stderr)
            continue
        found.setdefault(plugin.name, plugin)
    return found


def names() -> list[str]:
    """Domain names and aliases."""
    out = []
    for plugin in plugins().values():
        out += [plugin.name, *plugin.aliases]
    return sorted(out)


def find(name: str) -> DomainPlugin:
    """The plugin of a domain name or alias; an unknown name lists the valid ones."""
    for plugin in plugins().values():
        if name == plugin.name or name in plugin.aliases:
            return plugin
    raise UnknownNameError(f"unknown domain {name!r}; valid names: {', '.join(names())}")


def commands() -> dict[str, tuple[DomainPlugin, str]]:
    """Extra sub-commands: name -> (plugin, ``"module:function"``)."""
    return {cmd: (p, ref) for p in plugins().values() for cmd, ref in p.commands.items()}


def evaluators() -> dict[str, tuple[DomainPlugin, str]]:
    return {mode: (p, ref) for p in plugins().values() for mode, ref in p.evaluators.items()}


def command(ref: str) -> Callable[[list[str]], int]:
    return load_object(ref)


def instantiate_domain(cfg: dict[str, Any]):
    """A Domain from its ``{"class_path": ..., "init_args": {...}}`` configuration."""
    from jsonargparse import ArgumentParser

    from diffplat.domain import Domain

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Domain, "domain")
    return parser.instantiate_classes(parser.parse_object({"domain": cfg})).domain


def load_all_classes() -> list[str]:
    """Import every installed domain's Domain and backbone classes (for ``--help``, which
    lists the subclasses Python knows); returns the references that failed to import."""
    failed = []
    for plugin in plugins().values():
        for ref in (plugin.domain, *plugin.backbones):
            try:
                load_object(ref)
            except Exception:  # noqa: BLE001 - a domain whose libraries are missing
                failed.append(ref)
    return failed


def help_name(name: str) -> str:
    """A domain name or alias as its Domain class path (``--model.domain.help molecules``);
    other names unchanged."""
    for plugin in plugins().values():
        if name == plugin.name or name in plugin.aliases:
            module, _, cls = plugin.domain.partition(":")
            return f"{module}.{cls}"
    return name


def trusted_packages() -> tuple[str, ...]:
    """The top-level packages of the installed domains."""
    return tuple(sorted({p.package for p in plugins().values()}))


def package_dirs() -> dict[str, Path]:
    """Folder of each installed domain's package (found without importing it)."""
    out = {}
    for plugin in plugins().values():
        module = plugin.domain.split(":")[0].rpartition(".")[0] or plugin.domain.split(":")[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin:
            out[plugin.name] = Path(spec.origin).resolve().parent
    return out


def domain_of_file(filename: str) -> str | None:
    """The installed domain whose package holds ``filename`` (the deepest match)."""
    path = Path(filename).resolve()
    best, depth = None, -1
    for name, folder in package_dirs().items():
        if path.is_relative_to(folder) and len(folder.parts) > depth:
            best, depth = name, len(folder.parts)
    return best
