import math

import pytest
import torch

from diffplat.ema import EMA
from diffplat.training.data import StepIndexedLoader
from diffplat.training.optim import AdaptiveClipper, warmup_cosine


def _batches(loader, limit=None):
    out = []
    for i, b in enumerate(loader):
        if limit is not None and i >= limit:
            break
        out.append(b.tolist())
    return out


def test_loader_resumes_at_any_batch():
    data = torch.arange(100)
    consumed = {"n": 0}
    loader = StepIndexedLoader(data, 8, seed=3, counter=lambda: consumed["n"])
    assert len(loader) == 12
    epoch0 = _batches(loader)
    consumed["n"] = 12
    epoch1 = _batches(loader)
    assert epoch0 != epoch1 and len(epoch1) == 12
    consumed["n"] = 17  # resume in the middle of epoch 1
    assert _batches(loader) == epoch1[5:]
    flat = sum(epoch0, [])
    assert len(set(flat)) == len(flat) == 96  # no repeats within an epoch


def test_loader_ranks_are_disjoint():
    data = torch.arange(64)
    r0 = sum(_batches(StepIndexedLoader(data, 4, seed=0, rank=0, world=2)), [])
    r1 = sum(_batches(StepIndexedLoader(data, 4, seed=0, rank=1, world=2)), [])
    assert not set(r0) & set(r1) and len(r0) == len(r1) == 32
    with pytest.raises(ValueError, match="smaller than one batch"):
        StepIndexedLoader(torch.arange(3), 8)


def test_warmup_cosine():
    assert warmup_cosine(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(50, 0, 0, 0.1) == 1.0


def test_adaptive_clipper_follows_edm_molecules():
    clip = AdaptiveClipper(size=4, initial=100.0)
    q = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert clip.max_norm(q, 1) == 100.0
    assert clip.max_norm(q, 4) == pytest.approx(1.5 * 2.5 + 2 * float(q.std()))


def test_ema_warms_up_and_tracks():
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = EMA(lin, decay=0.9)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin)  # effective decay min(0.9, 2/11)
    assert float(ema.shadow.weight) == pytest.approx(1 - 2 / 11)
    for _ in range(200):
        ema.update(lin)
    assert math.isclose(float(ema.shadow.weight), 1.0, rel_tol=1e-6)
    assert int(ema.num_updates) == 201
