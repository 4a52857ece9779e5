"""Denoiser wrappers usable by every domain: classifier-free guidance and inpainting.

Both take a denoiser and return one with the same ``denoise(x_t, t) -> x0_hat`` signature,
so every sampler supports them unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffplat.checks import positive_int
from diffplat.noise import GaussianNoise, NoiseSpace
from diffplat.samplers.base import Denoise
from diffplat.schedules import Schedule


class ClassifierFreeGuidance:
    """Ho & Salimans (2022): D = D_uncond + scale * (D_cond - D_uncond).

    Guidance is applied to x0_hat, which for a fixed (x_t, t) is an affine image of eps_hat,
    v_hat or the EDM output, so the result is the same whatever the prediction target.
    scale = 1 is plain conditional sampling, 0 unconditional.

    Args:
        cond: the conditional denoiser.
        uncond: the same model with the null condition.
        scale: guidance weight w.
    """

    def __init__(self, cond: Denoise, uncond: Denoise, scale: float):
        self.cond, self.uncond, self.scale = cond, uncond, float(scale)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        if self.scale == 1.0:
            return self.cond(x_t, t)
        u = self.uncond(x_t, t)
        if self.scale == 0.0:
            return u
        return u + self.scale * (self.cond(x_t, t) - u)


class Inpainting:
    """Conditioning by replacement (Song et al. 2021, App. I; Lugmayr et al. 2022).

    Before each evaluation the known region of x_t is replaced by the known data noised to
    the current t; after it, the known region of x0_hat is set to the known data. The sample
    therefore ends exactly equal to ``known`` where ``mask`` is 1.

    Plain replacement under-uses the known part when the two regions are strongly coupled.
    ``resample = r > 1`` harmonises in the spirit of RePaint's resampling: r - 1 times per
    evaluation the merged estimate is noised back to the same t and denoised again (a Gibbs
    sweep at fixed noise level), at r denoiser calls per evaluation. On a correlated 2-D
    Gaussian this moves the conditional mean from 0.60 to 0.86 of the exact 0.90 (r = 10,
    tests/test_guidance.py), while narrowing the spread below the exact one.

    Args:
        denoise: the model's denoiser.
        known: data with the sample's shape (values outside the mask are ignored).
        mask: 1 where known, 0 where generated; broadcastable to ``known``.
        schedule: the schedule that maps t to (alpha, sigma).
        noise_space, generator: for the noise added to the known region.
        resample: denoiser calls per evaluation (1 = plain replacement).
    """

    def __init__(self, denoise: Denoise, known: Tensor, mask: Tensor, schedule: Schedule,
                 noise_space: NoiseSpace | None = None,
                 generator: torch.Generator | None = None, resample: int = 1):
        positive_int(resample, "resample")
        self.denoise, self.known, self.schedule = denoise, known, schedule
        self.resample = int(resample)
        self.mask = mask.to(known.dtype)
        self.space = noise_space or GaussianNoise()
        self.generator = generator

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        a, s = self.schedule.alpha_sigma(t)
        a, s = self.space.expand(a, x_t), self.space.expand(s, x_t)
        x0 = self.known
        for i in range(self.resample):
            if i > 0:  # noise the merged estimate back to t for another sweep
                x_t = a * x0 + s * self.space.sample_like(x_t, self.generator)
            eps = self.space.sample_like(self.known, self.generator)
            x_t = self.mask * (a * self.known + s * eps) + (1 - self.mask) * x_t
            x0 = self.mask * self.known + (1 - self.mask) * self.denoise(x_t, t)
        return x0
