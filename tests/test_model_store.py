"""The model without Lightning (diffplat.model.DiffusionModel) and the store that reads it
(diffplat.store): checkpoints keep their format, old ones load and sample as before, and the
LightningModule that wraps the model for training takes the same arguments as the store."""

import inspect
import json
from pathlib import Path

import pytest
import torch

from diffplat.model import DiffusionModel
from diffplat.models import shipped
from diffplat.store import TRAINING_STATE_KEYS, build_model, load_model
from diffplat.targets import Denoiser
from diffplat.training.checkpoint import load_module
from diffplat.training.module import DiffusionModule
from domains.toy import MLPBackbone
from domains.toy.domain import ToyDomain
from tests.helpers import write_config

DATA = Path(__file__).resolve().parent / "data"
OLD = DATA / "old_format_toy_ckpt.pt"  # written by diffplat before issue #25 (f08ac2b)
OLD_INFO = json.loads((DATA / "old_format_toy.json").read_text())


def test_an_old_checkpoint_loads_into_the_model_and_samples_as_before():
    import hashlib

    model = load_model(OLD)
    assert type(model) is DiffusionModel
    # the grid the digest was recorded with (heun's default before issue #26 changed it on
    # VP schedules): Karras on [0.002, 80] ending in a final denoise
    x, stats = model.generate(8, sampler="heun", steps=3, seed=0,
                              sampler_options={"spacing": "karras", "level_max": 80.0,
                                               "denoise_final": True})
    assert hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest() == \
        OLD_INFO["sample_sha256"]
    assert list(model.state_dict()) == [k for k in OLD_INFO["state_dict_keys"]
                                        if k not in TRAINING_STATE_KEYS]
    assert list(model.hparams) == list(OLD_INFO["hparams"])
    assert model.hparams.sampler == model.hparams["sampler"]


def test_the_lightning_module_keeps_the_checkpoint_format():
    stored = torch.load(OLD, weights_only=True)["state_dict"]
    module = load_module(OLD)
    assert isinstance(module, DiffusionModule)
    state = module.state_dict()
    assert list(state) == list(stored) == OLD_INFO["state_dict_keys"]
    assert list(state._metadata) == list(stored._metadata)
    for k in stored:
        assert torch.equal(state[k], stored[k]), k
    fresh = DiffusionModule(ToyDomain(), MLPBackbone(hidden=32, depth=2))
    fresh.load_state_dict(stored, strict=True)  # as Lightning restores a run
    assert torch.equal(fresh.ema.shadow.out[1].weight, module.ema.shadow.out[1].weight)


def test_an_old_checkpoint_resumes(tmp_path):
    from diffplat.cli import main

    cfg = write_config(tmp_path / "c.yaml", tmp_path / "run", max_steps=5, ckpt_every=5,
                       extra="  clip: adaptive\n")
    assert main(["fit", "-c", str(cfg), "--ckpt_path", str(OLD)]) == 0
    resumed = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5
    assert list(resumed["state_dict"]) == OLD_INFO["state_dict_keys"]


@pytest.mark.parametrize("name", sorted(shipped()))
def test_every_shipped_model_loads_into_both(name):
    model = load_model(shipped()[name])
    module = load_module(shipped()[name])
    assert type(model) is DiffusionModel and isinstance(module, DiffusionModule)
    mine = model.state_dict()
    theirs = {k: v for k, v in module.state_dict().items() if k not in TRAINING_STATE_KEYS}
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert dict(model.hparams) == dict(module.hparams)
    assert model.ema_denoiser.max_t == module.ema_denoiser.max_t


def test_the_model_holds_its_denoisers_as_submodules_and_each_weight_once():
    model = DiffusionModel(ToyDomain(), MLPBackbone(hidden=8, depth=1), max_t=0.3)
    assert dict(model.named_children())["denoiser"] is model.denoiser
    assert model.denoiser.backbone is model.backbone
    assert model.ema_denoiser.backbone is model.ema.shadow
    assert model.denoiser.max_t == model.ema_denoiser.max_t == 0.3
    keys = list(model.state_dict())
    assert keys and all(k.startswith(("backbone.", "ema.")) for k in keys)
    other = DiffusionModel(ToyDomain(), MLPBackbone(hidden=8, depth=1))
    other.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(next(other.ema_denoiser.parameters()),
                       next(model.ema.shadow.parameters()))
    with pytest.raises(ValueError, match="max_t"):
        Denoiser(MLPBackbone(hidden=8, depth=1), max_t=0.0)


def test_the_store_parses_the_arguments_training_takes():
    from diffplat.store.config import model_arguments

    mine = inspect.signature(model_arguments).parameters
    theirs = dict(inspect.signature(DiffusionModule.__init__).parameters)
    theirs.pop("self")
    assert [(p.name, p.default, str(p.annotation)) for p in mine.values()] == \
        [(p.name, p.default, str(p.annotation)) for p in theirs.values()]


def test_a_stored_configuration_builds_the_same_model_in_both():
    from diffplat.training.checkpoint import build_module

    cfg = dict(OLD_INFO["hparams"])
    cfg.update(t_options={"high": 0.5})
    model, module = build_model(cfg), build_module(cfg)
    assert dict(model.hparams) == dict(module.hparams)
    assert model.ema_denoiser.max_t == module.ema_denoiser.max_t == 0.5
    with pytest.raises(ValueError, match="clip"):
        build_model({**cfg, "clip": "sometimes"})
