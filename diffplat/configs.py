"""Finding a config file: the path as given, else the configs shipped with diffplat.

A source checkout keeps its configs in ``configs/`` beside the packages; a wheel carries the
same files as ``diffplat/configs/`` (pyproject.toml maps one onto the other). So
``diffplat fit -c configs/molecules/qm9-tiny.yaml`` works from any folder once diffplat is
installed, and so do the short forms ``-c molecules/qm9-tiny.yaml`` and ``-c molecules/qm9-tiny``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent  # diffplat/


def config_roots() -> list[Path]:
    """Folders holding the shipped configs: ``diffplat/configs`` in a wheel, the checkout's
    ``configs/`` in a source or editable install."""
    return [p for p in (_PACKAGE / "configs", _PACKAGE.parent / "configs") if p.is_dir()]


def shipped() -> list[str]:
    """Shipped configs as ``domain/name`` (without .yaml)."""
    names = set()
    for root in config_roots():
        names.update(str(p.relative_to(root).with_suffix("")) for p in root.glob("*/*.yaml"))
    return sorted(names)


def resolve(path: str) -> str:
    """``path`` when it exists, else the shipped config it names; FileNotFoundError listing
    the shipped configs when neither exists."""
    if Path(path).exists():
        return path
    rel = Path(path)
    if rel.parts and rel.parts[0] == "configs":
        rel = Path(*rel.parts[1:])
    for root in config_roots():
        for cand in (root / rel, root / rel.with_suffix(".yaml")):
            if cand.is_file():
                return str(cand)
    raise FileNotFoundError(f"config not found: {path} (shipped configs: "
                            f"{', '.join(shipped())})")


def load_yaml(path: Path) -> dict:
    """A config file as a mapping; ValueError naming the file, line and column on a YAML
    syntax error, or when the top level is not a mapping of keys."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}:{where}: YAML syntax error: {problem}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of keys (trainer:, "
                         f"model:, ...), not a {type(data).__name__}")
    return data


def config_args(argv: list[str]) -> list[tuple[int, str, str]]:
    """Every ``-c``/``--config`` option of a command line, in order: (index of the token
    that holds the path, its prefix, the path), the prefix "" for ``-c PATH`` and
    ``--config PATH``, "--config=" for ``--config=PATH``. The one reading of ``-c``."""
    found = []
    for i, tok in enumerate(argv):
        if tok in ("-c", "--config") and i + 1 < len(argv):
            found.append((i + 1, "", argv[i + 1]))
        elif tok.startswith("--config="):
            found.append((i, "--config=", tok.split("=", 1)[1]))
    return found


def config_files(argv: list[str]) -> list[str]:
    """The paths that a command line's ``-c``/``--config`` options name, in order."""
    return [path for _, _, path in config_args(argv)]


def resolve_args(argv: list[str]) -> list[str]:
    """Resolve the value of every ``-c``/``--config`` option of a command line and check
    that each file is a YAML mapping."""
    out = list(argv)
    for i, prefix, path in config_args(argv):
        resolved = resolve(path)
        out[i] = prefix + resolved
        _not_empty(Path(resolved))
    return out


def _not_empty(path: Path) -> None:
    """A ``-c`` file must hold settings (an empty one gave jsonargparse's bare "Unexpected
    config:")."""
    if not load_yaml(path):
        raise ValueError(f"{path}: the config file is empty (no trainer:, model:, ... keys)")
