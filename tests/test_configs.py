"""Every shipped training config builds: class paths resolve, argument names exist."""

from pathlib import Path

import pytest
import yaml

from diffplat.compare.grid import merge
from diffplat.training.checkpoint import build_module
from diffplat.training.lightning import derive_backbone_args

ROOT = Path(__file__).resolve().parents[1]
# configs meant to go on top of another (-c A -c B)
STACKED = {"qm9-alpha.yaml": "qm9.yaml", "qm9-alpha-small.yaml": "qm9-small.yaml"}
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if p.parent.name != "compare")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Tiny stand-ins for the data folders whose layout sizes a backbone (class folders):
    six procedural shape classes, ten digit folders of one silent clip each."""
    import numpy as np
    import soundfile as sf

    from domains.audio.data import DIGIT_WORDS
    from domains.shapes.procedural import prepare_procedural

    root = tmp_path_factory.mktemp("data")
    prepare_procedural(root / "shapes", per_class=10, seed=0)
    for split in ("train", "val", "test"):
        for word in DIGIT_WORDS:
            (root / "digits" / split / word).mkdir(parents=True)
            sf.write(root / "digits" / split / word / "a.wav", np.zeros(800), 8000)
    _conformer_sdf(root / "my-conformers.sdf")
    return {"data/my-conformers.sdf": root / "my-conformers.sdf",  # a user's file, by path
            "domains.shapes.ShapeDomain": root / "shapes",
            "domains.shapes.domain.ShapeDomain": root / "shapes",
            "domains.audio.AudioDomain": root / "digits",
            "domains.audio.domain.AudioDomain": root / "digits"}


def _conformer_sdf(path: Path) -> None:
    """Two conformers each of two molecules (with S and Cl), the layout of a user's SDF."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    writer = Chem.SDWriter(str(path))
    for smiles in ("CCS", "ClCC(=O)O"):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        for cid in AllChem.EmbedMultipleConfs(mol, 2, randomSeed=0):
            writer.write(mol, confId=cid)
    writer.close()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_builds(path, small_data):
    cfg = yaml.safe_load(path.read_text())
    if path.name in STACKED:
        cfg = merge(yaml.safe_load((path.parent / STACKED[path.name]).read_text()), cfg)
    model = cfg["model"]
    domain = model.get("domain") or {}
    if domain.get("class_path") in small_data:
        domain.setdefault("init_args", {})["data_path"] = str(small_data[domain["class_path"]])
    data_path = (domain.get("init_args") or {}).get("data_path")
    if data_path in small_data:
        domain["init_args"]["data_path"] = str(small_data[data_path])
    if "class_path" in model:  # a model other than the DiffusionModule (the audio classifier)
        from jsonargparse import ArgumentParser
        from pytorch_lightning import LightningModule

        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(LightningModule, "model")
        module = parser.instantiate_classes(parser.parse_object({"model": model})).model
    else:
        model["backbone"].setdefault("init_args", {}).update(derive_backbone_args(model))
        module = build_module(model)
    assert sum(p.numel() for p in module.parameters()) > 0
    trainer = cfg["trainer"]
    assert trainer.get("max_steps", 0) > 0 or trainer.get("max_epochs", 0) > 0
