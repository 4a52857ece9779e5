"""Recipe options of the QM9 model (issue #16): RBF edge features, self-conditioning.

"Off" must be bit-identical to the code before the options existed: the reference is that
code itself, read from git at BASE (the commit the options branched from) and imported as
a separate module; the tests skip when the checkout has no git history.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domains.molecules.egnn import EGNNBackbone, gaussian_rbf

ROOT = Path(__file__).resolve().parents[1]
BASE = "e81222b"  # main before the recipe options
DT = torch.float64


def baseline(path: str, name: str):
    """The module at ``path`` as it was at BASE, imported under ``name``."""
    try:
        src = subprocess.run(["git", "show", f"{BASE}:{path}"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"no git history with {BASE}")
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    exec(compile(src, f"{BASE}:{path}", "exec"), mod.__dict__)
    return mod


def _batch(sizes=(3, 7, 5), f=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.cat([torch.full((n,), g) for g, n in enumerate(sizes)])
    x = torch.randn(batch.numel(), 3 + f, generator=gen, dtype=DT) * 1.5
    return x, torch.randn(len(sizes), generator=gen, dtype=DT), batch


def test_gaussian_rbf_grid():
    d = torch.tensor([[0.0], [2.5], [10.0]], dtype=DT)
    out = gaussian_rbf(d, 5, 10.0)  # centres 0, 2.5, 5, 7.5, 10
    assert out.shape == (3, 5)
    torch.testing.assert_close(out[[0, 1, 2], [0, 1, 4]], torch.ones(3, dtype=DT))  # on centres
    torch.testing.assert_close(out[1, 0], torch.exp(torch.tensor(-0.5, dtype=DT)))


def test_egnn_options_off_match_the_code_before_them():
    old = baseline("domains/molecules/egnn.py", "_egnn_base")
    x, c, batch = _batch()
    for kw in ({}, {"attention": False, "inv_sublayers": 2}):
        torch.manual_seed(0)
        ref = old.EGNNBackbone(hidden=16, layers=3, coord_init_gain=1.0, **kw).to(DT)
        torch.manual_seed(0)
        new = EGNNBackbone(hidden=16, layers=3, coord_init_gain=1.0, **kw).to(DT)
        assert list(ref.state_dict()) == list(new.state_dict())
        want, got = ref(x, c, batch, 3), new(x, c, batch, 3)
        assert torch.equal(got, want)


def test_rbf_changes_the_network_input():
    x, c, batch = _batch()
    torch.manual_seed(0)
    model = EGNNBackbone(hidden=16, layers=2, coord_init_gain=1.0, rbf=8).to(DT)
    out = model(x, c, batch, 3)
    # zeroing the RBF columns of every edge layer's weights must change the output
    with torch.no_grad():
        for m in model.modules():
            if type(m).__name__ == "_PairLinear":
                m.weight[:, 2 * 16 + 1:2 * 16 + 9] = 0
    assert not torch.allclose(model(x, c, batch, 3), out)
    with pytest.raises(ValueError, match="rbf"):
        EGNNBackbone(rbf=1)
