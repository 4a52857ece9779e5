"""The result files of a comparison: one JSON object per file, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_result(path: Path) -> dict[str, Any] | None:
    """A result file's object, or None when it is missing or unreadable (a cell not done)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_result(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` so that a reader never sees half a file."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)
