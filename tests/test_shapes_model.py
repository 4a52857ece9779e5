"""The point transformer: permutation equivariance, conditioning, and a sampler whose output
follows the order of its input noise."""

import pytest
import torch

from diffplat import samplers, schedules
from diffplat.noise import GaussianNoise
from diffplat.targets import Denoiser
from domains.shapes import PointTransformer


def _model(inducing, **kw):
    torch.manual_seed(0)
    m = PointTransformer(hidden=32, depth=2, heads=4, mlp_ratio=2.0, inducing=inducing,
                         num_classes=3, **kw).double().eval()
    # adaLN-Zero starts as the zero map; give every parameter a random value so that the
    # test sees attention and modulation at work
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("inducing", [0, 8])
def test_backbone_is_permutation_equivariant(inducing):
    m = _model(inducing)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 50, 3, generator=gen, dtype=torch.float64)
    c = torch.tensor([0.3, -1.2], dtype=torch.float64)
    labels = torch.tensor([2, -1])
    perm = torch.randperm(50, generator=gen)
    out = m(x, c, labels=labels)
    assert out.abs().mean() > 1e-2                       # not a trivial (zero) map
    torch.testing.assert_close(m(x[:, perm], c, labels=labels), out[:, perm],
                               rtol=1e-10, atol=1e-10)
    # and a point's output depends on the other points (attention mixes them)
    moved = x.clone()
    moved[:, 0] += 1.0
    assert (m(moved, c, labels=labels)[:, 1:] - out[:, 1:]).abs().max() > 1e-4


def test_labels_condition_the_output_and_are_checked():
    m = _model(0)
    x = torch.randn(3, 20, 3, dtype=torch.float64)
    c = torch.zeros(3, dtype=torch.float64)
    a = m(x, c, labels=torch.tensor([0, 1, -1]))
    b = m(x, c, labels=torch.tensor([1, 1, -1]))
    assert (a[0] - b[0]).abs().max() > 1e-4
    torch.testing.assert_close(a[1:], b[1:])
    with pytest.raises(ValueError, match="num_classes=3"):
        m(x, c, labels=torch.tensor([0, 3, 1]))
    # label dropout acts only in training mode; eval is deterministic
    torch.testing.assert_close(m(x, c, labels=torch.tensor([0, 1, 2])),
                               m(x, c, labels=torch.tensor([0, 1, 2])))


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "ddim"])
def test_sampler_output_follows_the_order_of_the_input_noise(sampler):
    m = _model(0)
    schedule = schedules.get("cosine")
    denoiser = Denoiser(m, schedule, "v")
    labels = torch.tensor([1, 0])

    def denoise(x, t):
        return denoiser.predict(x, t, noise_space=GaussianNoise(), labels=labels)[1]

    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(2, 40, 3, generator=gen, dtype=torch.float64)
    perm = torch.randperm(40, generator=gen)
    fn = samplers.get(sampler)
    out = fn(denoise, noise, schedule, 6, noise_space=GaussianNoise())
    out_perm = fn(denoise, noise[:, perm], schedule, 6, noise_space=GaussianNoise())
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-9, atol=1e-9)
