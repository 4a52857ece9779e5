"""Models shipped with diffplat: ``diffplat.load(NAME)`` and ``diffplat sample --model NAME``.

Each shipped model is an export folder (``diffplat export`` plus a model card) under
``models/<name>/`` of a source checkout, or ``diffplat/shipped/<name>/`` inside a wheel.
"""

from __future__ import annotations

import json
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def model_roots() -> list[Path]:
    return [p for p in (_PACKAGE / "shipped", _PACKAGE.parent / "models") if p.is_dir()]


def shipped() -> dict[str, Path]:
    """name -> folder of every shipped model."""
    out = {}
    for root in model_roots():
        for folder in sorted(root.iterdir()):
            if (folder / "config.json").is_file():
                out.setdefault(folder.name, folder)
    return out


def find_model(name: str) -> Path:
    models = shipped()
    if name not in models:
        raise FileNotFoundError(
            f"{name!r} is neither a checkpoint, an export folder nor a shipped model "
            f"(shipped: {', '.join(models) or 'none'})")
    return models[name]


def card(name: str) -> dict:
    path = find_model(name) / "card.json"
    return json.loads(path.read_text()) if path.is_file() else {}
