"""Test-only plug-ins (importable by class path from the CLI as tests.helpers.*)."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch

from domains.toy import MLPBackbone

TINY_CONFIG = """
seed_everything: 0
trainer:
  max_steps: {max_steps}
  max_epochs: -1
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
  enable_model_summary: false
  check_val_every_n_epoch: 1000
  log_every_n_steps: 5
  logger: false
  default_root_dir: {root}
checkpoint:
  every_n_train_steps: {ckpt_every}
model:
  domain:
    class_path: domains.toy.ToyDomain
    init_args:
      num_train: 2048
      num_val: 256
      num_test: 256
  backbone:
    class_path: domains.toy.MLPBackbone
    init_args:
      hidden: 32
      depth: 2
  schedule: cosine
  target: v
  lr: 0.003
  warmup_steps: 5
  batch_size: 128
  sample_num: 256
  sample_steps: 6
"""


#: The trainer section of every test run: CPU, no logger, no progress bar, validation off.
#: Format with ``steps`` and ``root``; a test appends its ``model:`` section.
CPU_TRAINER = """
seed_everything: 0
trainer:
  max_steps: {steps}
  max_epochs: -1
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
  enable_model_summary: false
  check_val_every_n_epoch: 1000
  logger: false
  default_root_dir: {root}
"""


def write_config(path: Path, root: Path, max_steps: int = 20, ckpt_every: int = 5,
                 extra: str = "") -> Path:
    path.write_text(TINY_CONFIG.format(root=root, max_steps=max_steps,
                                       ckpt_every=ckpt_every) + extra)
    return path


class NaNBackbone(MLPBackbone):
    """An MLP that starts returning NaN on its ``nan_from``-th training forward pass."""

    def __init__(self, nan_from: int = 10, **kw):
        super().__init__(**kw)
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, x, c_noise):
        out = super().forward(x, c_noise)
        if self.training:
            self.calls += 1
            if self.calls >= self.nan_from:
                return out * float("nan")
        return out


class DumpWeights(pl.Callback):
    """Writes a hash of the final weights of every rank to ``out_dir/rank<k>.json``."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        h = hashlib.sha256()
        for k, v in sorted(pl_module.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        info = {"rank": trainer.global_rank, "world": trainer.world_size,
                "step": trainer.global_step, "sha256": h.hexdigest(),
                "first_weight": float(next(pl_module.backbone.parameters()).flatten()[0])}
        (Path(self.out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(info))


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Sleep(pl.Callback):
    """Slows training down (``seconds`` per batch) so that a test can signal a live run."""

    def __init__(self, seconds: float = 0.02):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import time

        time.sleep(self.seconds)


class _NaNGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NaNGradBackbone(MLPBackbone):
    """An MLP with a finite loss whose gradients turn NaN from the ``nan_from``-th training
    forward pass on (a finite loss with non-finite gradients)."""

    def __init__(self, nan_from: int = 10, **kw):
        super().__init__(**kw)
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, x, c_noise):
        out = super().forward(x, c_noise)
        if self.training and torch.is_grad_enabled():
            self.calls += 1
            if self.calls >= self.nan_from:
                return _NaNGrad.apply(out)
        return out


@contextmanager
def moved_away(path: Path):
    """``path`` is renamed for the block (a dataset that is gone), then restored."""
    hidden = path.with_name(path.name + "-away")
    path.rename(hidden)
    try:
        yield
    finally:
        hidden.rename(path)


def random_orthogonal(det: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A random 3 x 3 orthogonal matrix with determinant ``det`` (+1 a rotation, -1 a
    rotation with a reflection), for equivariance tests: QR of a Gaussian matrix with the
    signs fixed so that the draw is uniform (Mezzadri 2007)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed),
                                       dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q
