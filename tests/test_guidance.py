import torch

from diffplat import samplers, schedules
from diffplat.guidance import ClassifierFreeGuidance, Inpainting
from domains.toy import ExactDenoiser, GaussianMixture


def test_cfg_interpolates_and_extrapolates():
    sched = schedules.get("cosine")
    cond = ExactDenoiser(GaussianMixture(torch.tensor([[2.0, 0.0]]), torch.tensor([0.1])), sched)
    uncond = ExactDenoiser(GaussianMixture.default(), sched)
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.full((16,), 0.5, dtype=torch.float64)
    c, u = cond(x, t), uncond(x, t)
    torch.testing.assert_close(ClassifierFreeGuidance(cond, uncond, 1.0)(x, t), c)
    torch.testing.assert_close(ClassifierFreeGuidance(cond, uncond, 0.0)(x, t), u)
    torch.testing.assert_close(ClassifierFreeGuidance(cond, uncond, 3.0)(x, t), u + 3 * (c - u))
    # guided sampling lands on the conditional mode
    guided = ClassifierFreeGuidance(cond, uncond, 1.0)
    out = samplers.get("dpmpp_2m")(guided, torch.randn(500, 2, dtype=torch.float64), sched, 20)
    assert (out.mean(0) - torch.tensor([2.0, 0.0], dtype=torch.float64)).norm() < 0.1


def test_inpainting_keeps_the_known_part_and_fills_the_rest_consistently():
    # a strongly correlated 2-D Gaussian: x2 | x1 = 1 is N(0.9, 0.19)
    rho = 0.9
    evals, evecs = torch.linalg.eigh(torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64))
    # express it as a Gaussian "mixture" with one component in the eigenbasis: sample in
    # the rotated frame and rotate the denoiser in and out
    mix = GaussianMixture(torch.zeros(1, 2), evals[None])
    sched = schedules.get("cosine")
    base = ExactDenoiser(mix, sched)

    def den(x, t):
        return base(x @ evecs, t) @ evecs.T

    n = 4000
    known = torch.zeros(n, 2, dtype=torch.float64)
    known[:, 0] = 1.0
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    means = {}
    for resample in (1, 10):
        gen = torch.Generator().manual_seed(0)
        wrapped = Inpainting(den, known, mask, sched, generator=gen, resample=resample)
        start = torch.randn(n, 2, dtype=torch.float64, generator=gen)
        # a grid ending in a final denoise returns the wrapped x0 estimate: exact on the
        # known part (the VP default, denoise_final=False, ends within the smallest level)
        out = samplers.get("euler_ancestral")(wrapped, start, sched, 100, generator=gen,
                                              denoise_final=True)
        assert torch.equal(out[:, 0], known[:, 0])
        means[resample] = float(out[:, 1].mean())
    # replacement is a biased approximation of the conditional (mean 0.9); resampling
    # brings it close
    assert abs(means[10] - rho) < 0.1
    assert abs(means[10] - rho) < abs(means[1] - rho) - 0.1
