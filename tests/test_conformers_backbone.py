"""ConformerEGNN: SE(3) equivariance, mirror symmetry with flipped tags, zero CoM sampling."""

import numpy as np
import pytest
import torch

from diffplat import samplers, schedules
from diffplat.noise import ZeroCoMGaussian, com
from diffplat.targets import Denoiser
from domains.molecules.conformers.backbone import ConformerEGNN
from domains.molecules.conformers.data import collate, encode
from domains.molecules.conformers.graph import PAIR_DIM, mol_to_graph, node_dim
from domains.molecules.conformers.io import from_smiles
from tests.helpers import random_orthogonal

DT = torch.float64
VOCAB = {s: i for i, s in enumerate(["H", "C", "N", "O", "F"])}
SMILES = ("N[C@@H](C)C(=O)O", "C/C=C\\CO", "O[C@H]1C[C@@H](F)C1")


def _batch(seed=0):
    graphs = [mol_to_graph(from_smiles(s).mol, VOCAB) for s in SMILES]
    rng = np.random.default_rng(seed)
    b = collate([encode(g, rng.normal(size=(len(g), 3)) * 1.5, 5) for g in graphs])
    x = b.pop("x").to(DT)
    b["node_attr"] = b["node_attr"].to(DT)
    b["edge_attr"] = b["edge_attr"].to(DT)
    return x, b


def _model(chirality=True):
    torch.manual_seed(0)
    return ConformerEGNN(node_dim(5), PAIR_DIM, hidden=16, layers=2, coord_init_gain=1.0,
                         chirality=chirality).to(DT).eval()


def test_rotation_and_translation_equivariance():
    x, cond = _batch()
    model = _model()
    c = torch.tensor([0.3, -1.0, 2.0], dtype=DT)
    out = model(x, c, **cond)
    assert torch.allclose(com(out, cond["batch"], 3), torch.zeros(3, 3, dtype=DT), atol=1e-12)
    q = random_orthogonal(+1)
    shift = torch.randn(3, 3, dtype=DT)[cond["batch"]]  # a different translation per molecule
    moved = model(x @ q.T + shift, c, **cond)
    assert torch.allclose(moved, out @ q.T, rtol=1e-9, atol=1e-10)


def test_mirror_image_needs_flipped_tags():
    """Reflecting the positions and flipping every chiral tag reflects the output; reflecting
    the positions alone does not (the network tells enantiomers apart)."""
    x, cond = _batch(1)
    assert len(cond["chiral_sign"]) == 3
    model = _model()
    c = torch.tensor([0.5, 0.5, 0.5], dtype=DT)
    out = model(x, c, **cond)
    q = random_orthogonal(-1, seed=3)
    flipped = {**cond, "chiral_sign": -cond["chiral_sign"]}
    assert torch.allclose(model(x @ q.T, c, **flipped), out @ q.T, rtol=1e-9, atol=1e-10)
    assert not torch.allclose(model(x @ q.T, c, **cond), out @ q.T, atol=1e-4)
    # without the pseudoscalar the network is E(3)-equivariant, reflections included
    plain = _model(chirality=False)
    assert torch.allclose(plain(x @ q.T, c, **cond), plain(x, c, **cond) @ q.T, atol=1e-10)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "heun"])
def test_centre_of_mass_stays_zero_through_sampling(sampler):
    x, cond = _batch(2)
    space = ZeroCoMGaussian(cond["batch"], cond["num_graphs"])
    den = Denoiser(_model(), schedules.get("polynomial"), "eps")
    noise = space.sample_like(x, torch.Generator().manual_seed(0))
    coms = []

    def denoise(xt, t):
        coms.append(com(xt, cond["batch"], 3).abs().max().item())
        return den.predict(xt, t, noise_space=space, **cond)[1]

    out = samplers.get(sampler)(denoise, noise, den.schedule, 6, noise_space=space,
                                generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert max(coms) < 1e-10
    assert com(out, cond["batch"], 3).abs().max() < 1e-10


@pytest.mark.parametrize("name", ["conformers-qm9-tiny", "conformers-qm9"])
def test_configs_build_and_match_the_featurisation(name):
    """Both configs instantiate (no data needed) with input sizes derived from the domain
    equal to the graph's."""
    from pathlib import Path

    import yaml

    from diffplat.training.checkpoint import build_module
    from diffplat.training.lightning import derive_backbone_args

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "configs" / "molecules" / f"{name}.yaml").read_text())
    cfg["model"]["backbone"]["init_args"].update(derive_backbone_args(cfg["model"]))
    module = build_module(cfg["model"])
    assert module.backbone.node_dim == node_dim(len(module.domain.vocabulary))
    assert module.backbone.edge_dim == PAIR_DIM
