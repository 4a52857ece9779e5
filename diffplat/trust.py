"""The trust rule: a stored configuration may name classes only from trusted packages.

A checkpoint, an export's ``config.json`` or a sample folder's ``meta.json`` is data written
by someone else. Building a model from it means importing the classes it names, and an
import runs code. The rule, applied by every reader before anything is imported:

1. ``check_class_paths`` walks the configuration and refuses every value that could name a
   class outside the trusted packages, in every form the parser accepts: a
   ``{"class_path": ...}`` dict, a plain dotted string (``"evilmod.Evil"``), a JSON or
   YAML string holding either (``'{"class_path": ...}'``, ``"class_path: evilmod.Evil"``),
   at any depth.
2. ``enforced`` turns on jsonargparse's import-path policy (deny everything, allow the
   trusted packages) while the configuration is parsed and instantiated, so that whatever
   form the static walk might not foresee (a path to another config file, a new syntax in a
   later jsonargparse) still cannot import: the policy is checked before the import.

Trusted: ``diffplat``, ``torch.nn``, the packages of the installed domain plug-ins, and the
packages named in the environment variable ``DIFFPLAT_TRUSTED_PACKAGES`` (comma-separated).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections.abc import Iterator
from typing import Any

#: Packages whose classes a stored configuration may always name.
TRUSTED_PREFIXES = ("diffplat.", "torch.nn.")
ENV_VAR = "DIFFPLAT_TRUSTED_PACKAGES"
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_MAX_DEPTH = 32  # a configuration nested deeper than this is refused, not walked


class UntrustedClassError(ValueError):
    """A stored configuration names a class outside the trusted packages."""


def trusted_prefixes() -> tuple[str, ...]:
    """``diffplat.`` and ``torch.nn.``, the installed domains' packages, and the packages
    named in DIFFPLAT_TRUSTED_PACKAGES, each with a trailing dot."""
    from diffplat.plugins import trusted_packages

    extra = [p.strip().rstrip(".") for p in os.environ.get(ENV_VAR, "").split(",")
             if p.strip()]
    return TRUSTED_PREFIXES + tuple(f"{p}." for p in (*trusted_packages(), *extra))


def _refuse(name: Any, source: str, trusted: tuple[str, ...]) -> UntrustedClassError:
    return UntrustedClassError(
        f"refusing to import {name!r} named by {source}; trusted packages: "
        f"{', '.join(p.rstrip('.') for p in trusted)} (add yours to {ENV_VAR})")


def _importable_top(name: str) -> bool:
    """Whether the first component of a dotted name is a module Python could import
    (``find_spec`` of a top-level name searches sys.path without running any code)."""
    top = name.split(".", 1)[0]
    try:
        return top in __import__("sys").modules or importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return True  # cannot tell: treat as importable


def _parsed(text: str) -> Any:
    """A string the parser would read as a JSON/YAML mapping or list, or None."""
    if not any(c in text for c in "{[:\n"):
        return None
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return value if isinstance(value, (dict, list)) else None


def check_class_paths(cfg: Any, trusted: tuple[str, ...] | None = None,
                      source: str = "a stored configuration", _depth: int = 0) -> None:
    """Raise UntrustedClassError if any value in ``cfg`` could name a class outside the
    trusted packages (see the module docstring for the forms). Nothing is imported."""
    trusted = trusted or trusted_prefixes()
    if _depth > _MAX_DEPTH:
        raise UntrustedClassError(f"{source} is nested more than {_MAX_DEPTH} levels deep; "
                                  "refusing to read it")
    if isinstance(cfg, dict):
        if "class_path" in cfg:
            cp = cfg["class_path"]
            if not (isinstance(cp, str) and cp.startswith(trusted)
                    and _DOTTED.fullmatch(cp)):
                raise _refuse(cp, source, trusted)
        for value in cfg.values():
            check_class_paths(value, trusted, source, _depth + 1)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            check_class_paths(value, trusted, source, _depth + 1)
    elif isinstance(cfg, str):
        text = cfg.strip()
        inner = _parsed(text)
        if inner is not None:
            check_class_paths(inner, trusted, source, _depth + 1)
        elif "class_path" in text:  # looks like a class spec the walk cannot read
            raise _refuse(text[:80], source, trusted)
        elif _DOTTED.fullmatch(text) and not text.startswith(trusted) and \
                _importable_top(text):
            raise _refuse(text, source, trusted)


@contextlib.contextmanager
def enforced(trusted: tuple[str, ...] | None = None, source: str = "a stored configuration"
             ) -> Iterator[None]:
    """jsonargparse's import-path policy, for the duration: every import path a parsed
    value names is denied unless it lies in a trusted package. The policy is checked
    before the import (jsonargparse's ``import_object``); the previous policy is restored
    afterwards. A denial is re-raised as UntrustedClassError naming ``source``."""
    from jsonargparse._common import parsing_settings  # the policy's state (pinned version)

    trusted = trusted or trusted_prefixes()
    saved = {k: parsing_settings[k] for k in ("import_path_verdicts", "import_paths_enforced")}
    verdicts = dict(saved["import_path_verdicts"])
    verdicts["*"] = False
    for prefix in trusted:
        entry = prefix.rstrip(".")
        if entry.split(".")[0] != "jsonargparse":
            verdicts[entry] = True
    parsing_settings["import_path_verdicts"] = verdicts
    parsing_settings["import_paths_enforced"] = True
    try:
        yield
    except Exception as err:  # noqa: BLE001 - a denial inside a parser error becomes ours
        denied = re.search(r"Importing '([^']+)' is not allowed", str(err))
        if denied:
            raise _refuse(denied.group(1), source, trusted) from None
        raise
    finally:
        parsing_settings.update(saved)
