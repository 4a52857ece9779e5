"""``KEY=VALUE`` command-line options (``-o``, ``--prior``), values read as YAML scalars."""

from __future__ import annotations

from typing import Any


def parse_options(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"option {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
