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
import yaml

from domains.molecules.egnn import EGNNBackbone, gaussian_rbf
from tests.helpers import random_orthogonal

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


# -- self-conditioning ------------------------------------------------------------------
def _sc_model(**kw):
    torch.manual_seed(0)
    return EGNNBackbone(hidden=16, layers=2, coord_init_gain=1.0, self_condition=True,
                        **kw).to(DT)


@pytest.mark.parametrize("rbf", [0, 6])
@pytest.mark.parametrize("det", [1, -1])
def test_self_conditioned_egnn_is_equivariant(rbf, det):
    model = _sc_model(rbf=rbf)
    x, c, batch = _batch()
    sc, _, _ = _batch(seed=3)  # an unrelated estimate: positions and features
    q = random_orthogonal(det, seed=det + 2)
    shift = torch.randn(3, 3, generator=torch.Generator().manual_seed(9), dtype=DT)[batch]
    shift_sc = torch.randn(3, 3, generator=torch.Generator().manual_seed(8), dtype=DT)[batch]

    def move(z, s):
        return torch.cat([z[:, :3] @ q.T + s, z[:, 3:]], 1)

    with torch.no_grad():
        out = model(x, c, batch, 3, x_self_cond=sc)
        out_g = model(move(x, shift), c, batch, 3, x_self_cond=move(sc, shift_sc))
        plain = model(x, c, batch, 3)
    assert float((out - plain).abs().max()) > 1e-3  # the estimate is really used
    torch.testing.assert_close(out_g[:, :3], out[:, :3] @ q.T, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out_g[:, 3:], out[:, 3:], rtol=1e-9, atol=1e-9)
    # no estimate is a zero estimate
    torch.testing.assert_close(plain, model(x, c, batch, 3, x_self_cond=torch.zeros_like(x)),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="x_self_cond"):
        EGNNBackbone(hidden=16, layers=1).to(DT)(x, c, batch, 3, x_self_cond=sc)


class _Recorder(torch.nn.Module):
    """A backbone that records its x_self_cond inputs: out = 0.5 x + 0.25 x_self_cond."""

    supports_self_condition = True

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list = []

    def forward(self, x, c_noise, x_self_cond=None):
        self.seen.append(None if x_self_cond is None else x_self_cond.clone())
        return self.w * (0.5 * x + (0 if x_self_cond is None else 0.25 * x_self_cond))


class _RecordingDenoiser:
    """Wraps a Denoiser and records every x0_hat it returns."""

    def __init__(self, den):
        self.den, self.outs, self.alphas = den, [], []

    def __getattr__(self, name):
        return getattr(self.den, name)

    def predict(self, *a, **kw):
        res = self.den.predict(*a, **kw)
        self.outs.append(res[1].clone())
        self.alphas.append(res[2].clone())  # a(t), broadcast against x
        return res


def test_loss_off_is_bit_identical_to_the_loss_before_self_conditioning():
    from diffplat.losses import DiffusionLoss
    from diffplat.targets import Denoiser
    from domains.toy import MLPBackbone

    old = baseline("diffplat/losses.py", "_losses_base")
    torch.manual_seed(0)
    den = Denoiser(MLPBackbone(hidden=16, depth=2), "cosine", "v")
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    for weighting in ("uniform", "min_snr"):
        want = old.DiffusionLoss(weighting)(den, x0, generator=torch.Generator().manual_seed(2))
        got = DiffusionLoss(weighting)(den, x0, generator=torch.Generator().manual_seed(2))
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_self_conditioned_loss_feeds_the_no_grad_estimate_half_the_time():
    from diffplat.losses import DiffusionLoss
    from diffplat.targets import Denoiser

    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    loss = DiffusionLoss(self_condition=True)
    kinds = set()
    for seed in range(12):
        net = _Recorder()
        den = _RecordingDenoiser(Denoiser(net, "cosine", "eps", self_condition=True))
        losses, _ = loss(den, x0, generator=torch.Generator().manual_seed(seed))
        losses.mean().backward()  # gradients flow through the last call only
        assert all(s is not None for s in net.seen)
        if len(net.seen) == 1:  # tails: a zero estimate
            assert torch.equal(net.seen[0], torch.zeros_like(x0))
        else:  # heads: first zeros, then the first call's x0_hat, detached
            assert len(net.seen) == 2 and torch.equal(net.seen[0], torch.zeros_like(x0))
            # the backbone sees a(t) * x0_hat (bounded where x0_hat is not)
            assert torch.allclose(net.seen[1], den.alphas[0] * den.outs[0], rtol=0, atol=0)
            assert not den.outs[0].requires_grad
            assert float(net.seen[1].abs().max()) > 0
        kinds.add(len(net.seen))
    assert kinds == {1, 2}


def test_generate_feeds_each_call_the_previous_estimate_and_resets_per_chunk():
    from diffplat.sampling import generate
    from diffplat.targets import Denoiser
    from domains.toy.domain import ToyDomain

    net = _Recorder()
    den = _RecordingDenoiser(Denoiser(net, "cosine", "eps", self_condition=True))
    den.parameters = den.den.parameters
    _, stats = generate(den, ToyDomain(), 8, sampler="dpmpp_2m", steps=5, batch_size=4)
    per_chunk = stats.nfe
    assert stats.chunks == 2 and len(net.seen) == 2 * per_chunk > 2
    for k, seen in enumerate(net.seen):
        if k % per_chunk == 0:  # the first call of a chunk: no estimate yet
            assert torch.equal(seen, torch.zeros_like(seen))
        else:
            # the previous estimate, times this call's a(t)
            assert torch.allclose(seen, den.alphas[k] * den.outs[k - 1], rtol=0, atol=0)
    # a denoiser without self-conditioning gets no x_self_cond at all
    net2 = _Recorder()
    generate(Denoiser(net2, "cosine", "eps"), ToyDomain(), 4, sampler="dpmpp_2m", steps=3)
    assert net2.seen and all(s is None for s in net2.seen)


def test_module_checks_the_backbone_supports_self_conditioning():
    from diffplat.training.module import DiffusionModule
    from domains.toy import MLPBackbone
    from domains.toy.domain import ToyDomain

    with pytest.raises(ValueError, match="self_condition"):
        DiffusionModule(ToyDomain(), MLPBackbone(hidden=8, depth=1), self_condition=True)
    with pytest.raises(ValueError, match="self_condition"):
        DiffusionModule(ToyDomain(), EGNNBackbone(hidden=8, layers=1, self_condition=True))


def test_fit_and_sample_with_rbf_and_self_conditioning_from_the_config(qm9_small, tmp_path):
    from diffplat.cli import main
    from diffplat.training.checkpoint import load_module
    from tests.test_molecules_domain import TINY

    text = TINY.format(steps=3, root=tmp_path / "run", data=qm9_small)
    text = text.replace("      layers: 2\n", "      layers: 2\n      rbf: 8\n"
                        "      self_condition: true\n") + "  self_condition: true\n"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module = load_module(ckpt)
    assert module.ema_denoiser.self_condition and module.backbone.rbf == 8
    assert main(["sample", "--ckpt", str(ckpt), "--num", "4", "--steps", "4",
                 "--out", str(tmp_path / "samples"), "--no-progress"]) == 0
    assert (tmp_path / "samples" / "molecules.sdf").is_file()


def test_the_qm9_recipe_preset_loads_and_builds_its_sixteen_variants():
    from diffplat.compare.grid import load_grid
    from diffplat.training.module import DiffusionModule
    from domains.toy.domain import ToyDomain

    grid = load_grid(ROOT / "configs/compare/qm9-recipe.yaml", root=ROOT)
    cells = {c.domain: c for c in grid.train_cells}
    # name: (rbf, self-conditioning, schedule, target, coupling)
    want = {"qm9-base": (0, False, "polynomial", "eps", "independent"),
            "qm9-rbf": (16, False, "polynomial", "eps", "independent"),
            "qm9-selfcond": (0, True, "polynomial", "eps", "independent"),
            "qm9-rbf-selfcond": (16, True, "polynomial", "eps", "independent"),
            "qm9-v": (0, False, "polynomial", "v", "independent"),
            "qm9-flow": (0, False, "flow", "flow", "independent"),
            "qm9-flow-ot": (0, False, "flow", "flow", "minibatch_ot"),
            "qm9-types1": (0, False, "polynomial", "eps", "independent"),
            "qm9-v-types1": (0, False, "polynomial", "v", "independent"),
            "qm9-flow-types1": (0, False, "flow", "flow", "independent")}
    # round three, all on the v target: (lr, batch, steps, t-sampler)
    round3 = {"qm9-v-lr4": (0.004, 64, 3000, "uniform"),
              "qm9-v-bs32": (0.002, 32, 6000, "uniform"),
              "qm9-v-bs32-lr4": (0.004, 32, 6000, "uniform"),
              "qm9-v-bs32-lr8": (0.008, 32, 6000, "uniform"),
              "qm9-v-lownoise": (0.002, 64, 3000, "logit_normal"),
              "qm9-v-lowdisc": (0.002, 64, 3000, "low_discrepancy")}
    want.update({n: (0, False, "polynomial", "v", "independent") for n in round3})
    assert set(cells) == set(want)
    assert {(c.sampler, c.nfe) for c in grid.sample_cells} == {("dpmpp_2m_sde", 100)}
    assert {s.metric for s in grid.domains.values()} == {"mol_stability"}
    for name, cell in cells.items():
        model = cell.config["model"]
        opt = (model["lr"], model["batch_size"], cell.config["trainer"]["max_steps"],
               model.get("t_sampler", "uniform"))
        # the first two rounds keep qm9-tiny's first optimisation whatever its recipe is now
        assert opt == round3.get(name, (0.002, 64, 3000, "uniform")), name
        args = model["backbone"]["init_args"]
        got = (args.get("rbf", 0), model.get("self_condition", False), model["schedule"],
               model["target"], model.get("coupling", "independent"))
        assert got == want[name], name
        scale = model["domain"]["init_args"].get("onehot_scale", 4.0)
        assert scale == (1.0 if name.endswith("types1") else 4.0), name
        # the backbone and the module accept the variant's options together
        backbone = EGNNBackbone(**args)
        DiffusionModule(ToyDomain(), backbone, self_condition=got[1], schedule=got[2],
                        target=got[3], coupling=got[4])
    assert len({c.dirname for c in cells.values()}) == len(want)
    # qm9-tiny (make demo) carries round three's optimisation (round four made it VE)
    tiny = yaml.safe_load((ROOT / "configs/molecules/qm9-tiny.yaml").read_text())
    assert (tiny["model"]["target"], tiny["model"]["lr"], tiny["model"]["batch_size"],
            tiny["trainer"]["max_steps"]) == ("edm", 0.004, 32, 6000)


# -- minibatch optimal-transport coupling -------------------------------------------------
def test_ot_assignment_equals_brute_force_over_permutations():
    import itertools

    from diffplat.losses import ot_pair
    from diffplat.noise import GaussianNoise

    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        x0, eps = torch.randn(4, 3, generator=gen, dtype=DT), torch.randn(4, 3, generator=gen,
                                                                          dtype=DT)
        cost = torch.cdist(x0, eps) ** 2
        best = min(itertools.permutations(range(4)),
                   key=lambda p: sum(float(cost[i, p[i]]) for i in range(4)))
        assert torch.equal(ot_pair(x0, eps, GaussianNoise()), eps[list(best)])


def test_ot_pairs_molecules_only_with_molecules_of_their_size():
    from diffplat.losses import ot_pair
    from diffplat.noise import ZeroCoMGaussian, com

    sizes = [3, 5, 3, 5, 3, 4]
    batch = torch.cat([torch.full((n,), g) for g, n in enumerate(sizes)])
    space = ZeroCoMGaussian(batch, len(sizes))
    gen = torch.Generator().manual_seed(0)
    x0 = space.project(torch.randn(len(batch), 9, generator=gen, dtype=DT))
    eps = space.sample_like(x0, gen)
    out = ot_pair(x0, eps, space)
    rows = space.sample_rows(x0)
    total = lambda e: float(space.sum((x0 - e) ** 2).sum())  # noqa: E731
    assert total(out) <= total(eps)
    for b, r in enumerate(rows):  # every molecule got a whole noise draw of its own size
        match = [c for c in range(len(sizes)) if sizes[c] == sizes[b]
                 and torch.equal(out[r], eps[rows[c]])]
        assert len(match) == 1
    assert torch.equal(out[rows[5]], eps[rows[5]])  # the only 4-atom molecule keeps its own
    assert float(com(out[:, :3], batch, len(sizes)).abs().max()) < 1e-12


def test_independent_coupling_is_the_default_and_ot_is_for_flow():
    from diffplat.losses import DiffusionLoss
    from diffplat.targets import Denoiser
    from diffplat.training.module import DiffusionModule
    from domains.toy import MLPBackbone
    from domains.toy.domain import ToyDomain

    torch.manual_seed(0)
    den = Denoiser(MLPBackbone(hidden=16, depth=2), "flow", "flow")
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    a = DiffusionLoss()(den, x0, generator=torch.Generator().manual_seed(2))[0]
    b = DiffusionLoss(coupling="independent")(den, x0,
                                               generator=torch.Generator().manual_seed(2))[0]
    c = DiffusionLoss(coupling="minibatch_ot")(den, x0,
                                                generator=torch.Generator().manual_seed(2))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="coupling"):
        DiffusionLoss(coupling="ot")
    with pytest.raises(ValueError, match="flow"):
        DiffusionModule(ToyDomain(), MLPBackbone(hidden=8, depth=1), coupling="minibatch_ot")
    DiffusionModule(ToyDomain(), MLPBackbone(hidden=8, depth=1), schedule="flow",
                    target="flow", coupling="minibatch_ot")
