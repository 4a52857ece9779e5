"""Model cards: what is known about how a model was made (``card.json``, ``MODEL_CARD.md``),
and the names of the machine it was made on."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

CARD_JSON, CARD_MD = "card.json", "MODEL_CARD.md"


def model_card(module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is known about how a model was made, from its stored run configuration and
    training record, updated with ``extra``."""
    hp = dict(module.hparams)
    run = module.run_config or {}
    record = getattr(module, "train_record", None) or {}
    domain = hp.get("domain") if isinstance(hp.get("domain"), dict) else {}
    card: dict[str, Any] = {
        "domain": module.domain.name,
        "data": (domain.get("init_args") or {}).get("data_path"),
        "schedule": hp.get("schedule"), "target": hp.get("target"),
        "backbone": (hp.get("backbone") or {}).get("class_path")
        if isinstance(hp.get("backbone"), dict) else None,
        "parameters": sum(p.numel() for p in module.backbone.parameters()),
        "sampler": hp.get("sampler"), "sample_steps": hp.get("sample_steps"),
        "steps": record.get("steps"), "train_seconds": record.get("seconds"),
        "device": record.get("device"),
        "command": record.get("command") or (f"diffplat fit -c {run['config'][0]}"
                                             if run.get("config") else None),
        "created": time.strftime("%Y-%m-%d"),
    }
    card.update(extra or {})
    return card


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# {card.get('name') or card['domain']} model", ""]
    for key in ("description", "domain", "data", "data_license", "config", "command",
                "steps", "train_seconds", "device", "backbone", "parameters", "schedule",
                "target", "sampler", "sample_steps", "created"):
        if card.get(key) not in (None, ""):
            lines.append(f"- **{key.replace('_', ' ')}**: {card[key]}")
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---:|"]
        for k, v in metrics.items():
            lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
        if card.get("metrics_command"):
            lines += ["", f"Measured with `{card['metrics_command']}`."]
        if card.get("measured_with"):
            lines += ["", "Sampling: " + ", ".join(f"{k} {v}" for k, v in
                                                  card["measured_with"].items()) + "."]
    if card.get("notes"):
        lines += ["", "## Notes", "", str(card["notes"])]
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: Any) -> str:
    """A readable name of the machine part a model trained on."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()} ({torch.get_num_threads()} threads)"
