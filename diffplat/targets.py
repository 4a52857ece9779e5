"""Prediction targets (parameterisations) and the Denoiser that wraps a backbone.

A backbone F is any module called as ``F(c_in * x_t, c_noise, **cond)``. The target decides
what F's output means and how it becomes the denoised estimate x0_hat = D(x_t, t). Samplers
only ever see D, so they never branch on the target (the k-diffusion design).

With x_t = a x0 + s eps (a = alpha(t), s = sigma(t)) and d = sigma_data:

=========  ==============================  ===============================  ===================
target     F is trained towards            x0_hat from F                     J = target-MSE /
                                                                             x0-MSE
=========  ==============================  ===============================  ===================
eps        eps                             (x - s F) / a                     a^2 / s^2 (the SNR)
x0         x0                              F                                 1
v          a eps - s x0                    (a x - s F) / (a^2 + s^2)         ((a^2+s^2) / s)^2
edm        (x0 - c_skip x) / c_out         c_skip x + c_out F                1 / c_out^2
flow       eps - x0                        (x - s F) / (a + s)               ((a + s) / s)^2
=========  ==============================  ===============================  ===================

v is Salimans & Ho (2022), edm the preconditioning of Karras et al. (2022, Table 1) written
in the x_t frame: c_skip = a d^2 / (s^2 + a^2 d^2), c_out = s d / sqrt(s^2 + a^2 d^2). Every
target feeds F the same normalised input c_in x_t with c_in = 1 / sqrt(s^2 + a^2 d^2) and the
same noise embedding c_noise = log(s / a) / 4, so one backbone serves every schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffplat import schedules as schedules_mod
from diffplat.noise import GaussianNoise, NoiseSpace
from diffplat.registry import Registry

registry: Registry[type[Target]] = Registry("prediction target")


class Target:
    """A parameterisation. Coefficients a, s arrive already broadcast against x."""

    name = "base"

    def __init__(self, sigma_data: float = 1.0):
        self.sigma_data = float(sigma_data)

    def to_x0(self, x: Tensor, out: Tensor, a: Tensor, s: Tensor) -> Tensor:
        raise NotImplementedError

    def value(self, x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
        """The regression target for F given the clean data and the noise."""
        raise NotImplementedError

    def jacobian(self, a: Tensor, s: Tensor) -> Tensor:
        """J with ||F - target||^2 = J ||x0_hat - x0||^2 (per element)."""
        raise NotImplementedError


@registry.register("eps")
class EpsTarget(Target):
    name = "eps"

    def to_x0(self, x, out, a, s):
        return (x - s * out) / a

    def value(self, x0, eps, a, s):
        return eps

    def jacobian(self, a, s):
        return (a / s) ** 2


@registry.register("x0")
class X0Target(Target):
    name = "x0"

    def to_x0(self, x, out, a, s):
        return out

    def value(self, x0, eps, a, s):
        return x0

    def jacobian(self, a, s):
        return torch.ones_like(a)


@registry.register("v")
class VTarget(Target):
    name = "v"

    def to_x0(self, x, out, a, s):
        return (a * x - s * out) / (a * a + s * s)

    def value(self, x0, eps, a, s):
        return a * eps - s * x0

    def jacobian(self, a, s):
        return ((a * a + s * s) / s) ** 2


@registry.register("edm")
class EDMTarget(Target):
    name = "edm"

    def _coefs(self, a, s):
        d2 = self.sigma_data**2
        norm = s * s + a * a * d2
        return a * d2 / norm, s * self.sigma_data / norm.sqrt()  # c_skip (on x), c_out

    def to_x0(self, x, out, a, s):
        c_skip, c_out = self._coefs(a, s)
        return c_skip * x + c_out * out

    def value(self, x0, eps, a, s):
        c_skip, c_out = self._coefs(a, s)
        return (x0 - c_skip * (a * x0 + s * eps)) / c_out

    def jacobian(self, a, s):
        return 1 / self._coefs(a, s)[1] ** 2


@registry.register("flow")
class FlowTarget(Target):
    name = "flow"

    def to_x0(self, x, out, a, s):
        return (x - s * out) / (a + s)

    def value(self, x0, eps, a, s):
        return eps - x0

    def jacobian(self, a, s):
        return ((a + s) / s) ** 2


def get(name: str | Target, **options: Any) -> Target:
    """Build a target by name: eps, x0, v, edm, flow."""
    if isinstance(name, Target):
        return name
    return registry.get(name)(**options)


def names() -> list[str]:
    return registry.names()


class Denoiser(nn.Module):
    """Wraps a backbone into ``D(x_t, t) -> x0_hat`` for a schedule and a target.

    Args:
        backbone: module called as ``backbone(c_in * x_t, c_noise, **cond)``; c_noise has
            shape [B] and equals log(sigma / alpha) / 4.
        schedule: a Schedule or its name.
        target: a Target or its name ("eps", "x0", "v", "edm", "flow").
        noise_space: how per-sample scalars broadcast against x (dense Gaussian by default).
        sigma_data: standard deviation of the data, used by c_in and the edm target.
        self_condition: the backbone was trained with self-conditioning (it takes an earlier
            x0_hat as ``x_self_cond``); ``diffplat.sampling.generate`` then feeds every call
            the previous call's estimate. ``predict`` hands the backbone a(t) * x0_hat.
        max_t: the largest schedule time the backbone was trained on (``t_options: {high:
            ...}``); below 1 the denoiser only refines (``generate(start=(x, t))`` with
            t <= max_t) and cannot sample from pure noise.

    Shapes:
        x_t: data shape with batch size B (or a ragged batch the noise space understands);
        t: [B]; returns x0_hat with x_t's shape.
    """

    def __init__(self, backbone: nn.Module, schedule: Any = "cosine", target: Any = "eps",
                 noise_space: NoiseSpace | None = None, sigma_data: float = 1.0,
                 self_condition: bool = False, max_t: float = 1.0):
        super().__init__()
        if not 0.0 < float(max_t) <= 1.0:
            raise ValueError(f"max_t must be in (0, 1], got {max_t}")
        self.backbone = backbone
        self.self_condition = bool(self_condition)
        self.schedule = schedules_mod.get(schedule) if isinstance(schedule, str) else schedule
        self.sigma_data = float(sigma_data)
        self.target = get(target, sigma_data=sigma_data) if isinstance(target, str) else target
        self.noise_space = noise_space or GaussianNoise()
        self.max_t = float(max_t)
        #: an optional compiled version of the backbone (kept out of the state dict)
        self.compiled: Any = None

    def coefficients(self, t: Tensor, x: Tensor, noise_space: NoiseSpace | None = None):
        """(a, s, c_in, c_noise): a, s, c_in broadcast against x; c_noise of shape [B]."""
        space = noise_space or self.noise_space
        a, s = self.schedule.alpha_sigma(t)
        c_noise = -self.schedule.log_snr(t) / 8
        c_in = 1 / torch.sqrt(s * s + a * a * self.sigma_data**2)
        return (space.expand(a, x), space.expand(s, x), space.expand(c_in, x),
                c_noise.to(x.dtype))

    def predict(self, x_t: Tensor, t: Tensor, noise_space: NoiseSpace | None = None,
                **cond: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns (F output, x0_hat, a, s) so losses can use either space."""
        a, s, c_in, c_noise = self.coefficients(t, x_t, noise_space)
        net = self.compiled if self.compiled is not None else self.backbone
        if self.self_condition and cond.get("x_self_cond") is not None:
            # the backbone sees a(t) * x0_hat, the signal part of x_t as last estimated:
            # bounded where the estimate is not (an eps target's x0_hat = (x_t - s eps) / a
            # amplifies its error by s / a, 316 at t = 1 of the polynomial schedule)
            cond = {**cond, "x_self_cond": a * cond["x_self_cond"]}
        out = net(c_in * x_t, c_noise, **cond)
        return out, self.target.to_x0(x_t, out, a, s), a, s

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return self.predict(x_t, t, **cond)[1]
