"""Every shipped training config builds: class paths resolve, argument names exist."""

from pathlib import Path

import pytest
import yaml

from diffplat.compare.grid import merge
from diffplat.training.checkpoint import build_module

ROOT = Path(__file__).resolve().parents[1]
STACKED = {"qm9-alpha.yaml": "qm9.yaml"}  # configs meant to go on top of another (-c A -c B)
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if p.parent.name != "compare")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_builds(path):
    cfg = yaml.safe_load(path.read_text())
    if path.name in STACKED:
        cfg = merge(yaml.safe_load((path.parent / STACKED[path.name]).read_text()), cfg)
    model = cfg["model"]
    if "class_path" in model:  # a model other than the DiffusionModule (the audio classifier)
        from jsonargparse import ArgumentParser
        from pytorch_lightning import LightningModule

        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(LightningModule, "model")
        module = parser.instantiate_classes(parser.parse_object({"model": model})).model
    else:
        module = build_module(model)
    assert sum(p.numel() for p in module.parameters()) > 0
    trainer = cfg["trainer"]
    assert trainer.get("max_steps", 0) > 0 or trainer.get("max_epochs", 0) > 0
