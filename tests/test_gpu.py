"""GPU-only checks (skipped without CUDA): bf16 mixed precision and torch.compile."""

import pytest
import torch

from diffplat.cli import main
from tests.helpers import write_config

pytestmark = pytest.mark.gpu


def test_fit_bf16_compiled_on_gpu(tmp_path):
    cfg = write_config(tmp_path / "g.yaml", tmp_path / "run", max_steps=30, ckpt_every=30)
    assert main(["fit", "-c", str(cfg), "--trainer.accelerator", "gpu",
                 "--trainer.precision", "bf16-mixed", "--model.compile", "true"]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 30
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if v.is_floating_point())
