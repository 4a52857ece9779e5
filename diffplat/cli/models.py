"""``diffplat models``: the shipped models, each with its headline figures from its card."""

from __future__ import annotations

import argparse
import json
from typing import Any


def rows() -> list[dict[str, Any]]:
    """One record per shipped model: name, domain, what it gives, the card's headline
    metrics (``card.json``'s ``headline`` keys, in order) and how they were measured."""
    from diffplat.models import card, shipped

    out = []
    for name, folder in shipped().items():
        info = card(name)
        metrics = info.get("metrics") or {}
        # the first three figures, not their intervals or per-seed values (card_metrics.py)
        keys = info.get("headline") or [k for k in metrics if not k.endswith(
            ("_ci_low", "_ci_high")) and "_seed" not in k][:3]
        out.append({"name": name, "domain": info.get("domain", "?"),
                    "description": info.get("description", ""),
                    "headline": {k: metrics[k] for k in keys if k in metrics},
                    "intervals": {k: [metrics[f"{k}_ci_low"], metrics[f"{k}_ci_high"]]
                                  for k in keys if f"{k}_ci_low" in metrics
                                  and f"{k}_ci_high" in metrics},
                    "measured_with": info.get("measured_with") or {},
                    "card": str(folder / "MODEL_CARD.md")})
    return out


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _how(measured: dict[str, Any]) -> str:
    parts = [f"{k} {measured[k]}" for k in ("sampler", "steps", "nfe", "spacing", "guidance")
             if k in measured]
    parts += [f"{k}={v}" for k, v in (measured.get("sampler_options") or {}).items()]
    return ", ".join(parts)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="diffplat models",
        description="List the models shipped with diffplat (diffplat sample --model NAME, "
                    "diffplat.load(NAME)) with the headline figures of their model cards.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    args = p.parse_args(argv)
    records = rows()
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("no shipped models found")
        return 0
    for r in records:
        print(f"{r['name']}  ({r['domain']})  {r['description']}")
        ci = r["intervals"]
        figures = "  ".join(f"{k} {_figure(v)}" + (f" [{_figure(ci[k][0])}, {_figure(ci[k][1])}]"
                                                    if k in ci else "")
                            for k, v in r["headline"].items())
        how = _how(r["measured_with"])
        print(f"    {figures}" + (f"   [{how}]" if how else ""))
        print(f"    card: {r['card']}")
    return 0
