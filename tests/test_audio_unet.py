"""The waveform U-Net: shapes, padding, conditioning, the null class."""

import pytest
import torch

from domains.audio.unet import UNet1D, fourier_features


def _net(**kw):
    torch.manual_seed(0)
    net = UNet1D(channels=[8, 16, 16], factors=[4, 5], blocks=1, attention_levels=[2],
                 heads=2, emb_dim=32, **kw)
    for p in net.parameters():  # the zero-initialised output would hide every effect
        if p.abs().sum() == 0 and p.ndim > 1:
            torch.nn.init.normal_(p, std=0.05)
    return net.eval()


@pytest.mark.parametrize("length", [400, 1000, 1234])
def test_shapes_for_lengths_that_do_not_divide(length):
    net = _net()
    x = torch.randn(3, 1, length)
    assert net(x, torch.zeros(3)).shape == (3, 1, length)


def test_zero_init_output_and_noise_level_dependence():
    torch.manual_seed(0)
    fresh = UNet1D(channels=[8, 16], factors=[4], blocks=1, attention_levels=[1], heads=2,
                   emb_dim=32)
    assert fresh(torch.randn(2, 1, 64), torch.zeros(2)).abs().max() == 0
    net = _net()
    x = torch.randn(2, 1, 400)
    assert not torch.allclose(net(x, torch.zeros(2)), net(x, torch.ones(2)))
    f = fourier_features(torch.tensor([0.0, 0.5]), 16)
    assert f.shape == (2, 16) and torch.allclose(f[0, :8], torch.ones(8))


def test_class_conditioning_and_null_class():
    net = _net(num_classes=3)
    x, c = torch.randn(1, 1, 400).expand(4, 1, 400), torch.zeros(4)
    out = net(x, c, labels=torch.tensor([0, 1, 2, 3]))  # 3 = the null class
    for i in range(4):
        for j in range(i + 1, 4):
            assert (out[i] - out[j]).abs().max() > 1e-4
    same = net(x, c, labels=torch.tensor([1, 1, 1, 1]))
    assert torch.allclose(same[0], same[3], atol=1e-6)
    # the batch does not leak between samples: sample 0 alone gives the same output
    assert torch.allclose(net(x[:1], c[:1], labels=torch.tensor([0])), out[:1], atol=1e-5)
    with pytest.raises(ValueError, match="needs labels"):
        net(x, c)
    with pytest.raises(ValueError, match="unconditional"):
        _net()(x, c, labels=torch.zeros(4, dtype=torch.long))


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="need 2 factors"):
        UNet1D(channels=[8, 16, 32], factors=[4])
    with pytest.raises(ValueError, match="attention_levels"):
        UNet1D(channels=[8, 16], factors=[4], attention_levels=[5])
