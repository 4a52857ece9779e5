"""One-line explanations of a library that failed to load.

A domain imports its own libraries (torchaudio, RDKit, trimesh, ...) only when a command
needs them. When one is missing or broken (the classic case: a torchaudio wheel built for
another torch, whose ``libtorchaudio.so`` then fails with an undefined symbol), the command
should say which package, which domain and how to fix it, not print a traceback. The
package and the domain are read off the traceback itself, so the core names no domain.
"""

from __future__ import annotations

import re
import traceback
from importlib import metadata
from pathlib import Path

#: The lock file of the tested environment (source checkouts; absent in a wheel install).
CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


def pinned_versions(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of a constraints file
    (names normalised as in PEP 503); empty when the file is absent."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if m:
            out[normalise(m.group(1))] = m.group(2)
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _ours() -> tuple[str, ...]:
    from diffplat.plugins import trusted_packages

    return ("diffplat", *trusted_packages())


def _package_in_path(path: str, known: dict[str, list[str]]) -> str | None:
    """The outermost folder of ``path`` named like an installed top-level module."""
    for part in Path(path).parts[:-1]:
        if part in known and part not in _ours():
            return part
    return None


def _failed_module(err: BaseException) -> str | None:
    if isinstance(err, ModuleNotFoundError) and err.name:
        return err.name.split(".")[0]
    known = metadata.packages_distributions()
    # a shared library named in the message ("Could not load this library: .../x.so")
    for path in re.findall(r"(/[^\s:'\"]+\.(?:so|dylib|dll)[.0-9]*)", str(err)):
        top = _package_in_path(path, known)
        if top is not None:
            return top
    # else the innermost frame inside an installed library other than torch itself
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        top = _package_in_path(frame.filename, known)
        if top is not None and top not in ("importlib", "torch"):
            return top
    if isinstance(err, ImportError) and err.name:
        return err.name.split(".")[0]
    return None


def _domain_of(err: BaseException):
    """The installed domain plug-in whose code tried the import (innermost frame)."""
    from diffplat.plugins import domain_of_file, plugins

    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        name = domain_of_file(frame.filename)
        if name is not None:
            return plugins()[name]
    return None


def _distribution(module: str) -> str:
    dists = metadata.packages_distributions().get(module) or []
    return dists[0] if dists else module


def _extras() -> set[str]:
    try:
        return set(metadata.metadata("diffplat").get_all("Provides-Extra") or [])
    except metadata.PackageNotFoundError:
        return set()


def import_failure(err: BaseException) -> str | None:
    """One line naming the package, the domain and the fix, or None when ``err`` is not a
    failed import of a library."""
    if not isinstance(err, (ImportError, OSError)):
        return None
    if isinstance(err, OSError) and not isinstance(err, ImportError):
        text = str(err)
        if "load" not in text.lower() or ".so" not in text and ".dll" not in text:
            return None
    module = _failed_module(err)
    if module is None or module in _ours():
        return None
    dist = _distribution(module)
    plugin = _domain_of(err)
    domain = plugin.name if plugin is not None else None
    version = installed_version(dist)
    pins = pinned_versions()
    pinned = pins.get(normalise(dist))
    where = f"the {domain} domain needs {dist}" if domain else f"this command needs {dist}"
    cause = f"{type(err).__name__}: {one_line(err)}"
    torch_version = installed_version("torch")
    if version is None:
        state, tested = "which is not installed", ""
    elif dist.startswith("torch") and dist != "torch":  # a compiled torch extension
        state = f"but {dist} {version} does not load beside torch {torch_version}"
        tested = (f"; the tested pair is {dist} {pinned} with torch {pins.get('torch')}"
                  if pinned else f"; it must be the {dist} built for torch {torch_version}")
    else:
        state = f"but {dist} {version} failed to load"
        tested = f"; the tested version is {pinned}" if pinned and pinned != version else ""
    wanted = (plugin.extra or plugin.name) if plugin is not None else "all"
    extra = wanted if wanted in _extras() else "all"
    fix = (f'pip install -c constraints.txt -e ".[{extra}]"' if CONSTRAINTS.is_file()
           else f"pip install --force-reinstall 'diffplat[{extra}]'")
    return f"{where}, {state} ({cause}){tested}. Fix: {fix}"


def one_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


__all__ = ["import_failure", "pinned_versions", "installed_version", "normalise", "one_line",
           "CONSTRAINTS"]
