"""Training losses: per-sample [B] values, loss weightings, t-samplers and the VLB.

Every weighting is written as a weight w(lambda) on the x0-space squared error, the common
currency of Kingma & Gao (2023, "Understanding diffusion objectives"). The loss is computed
in the target's own space and rescaled by w / J (J from the target, see diffplat.targets), so
``weighting="uniform"`` is exactly the plain MSE on the target.

====================  =========================================  ==========================
weighting             w(lambda) on the x0 error                  source
====================  =========================================  ==========================
uniform               J (plain MSE on the target)                Ho et al. 2020
min_snr               min(SNR, gamma)                            Hang et al. 2023
edm                   SNR + 1 / sigma_data^2                     Karras et al. 2022
sigmoid               SNR * sigmoid(bias - lambda)               Kingma & Gao 2023
====================  =========================================  ==========================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffplat.registry import Registry
from diffplat.schedules import LOG_SNR_LIMIT, Schedule
from diffplat.targets import Denoiser

weightings: Registry[Callable[..., Tensor]] = Registry("loss weighting")
time_samplers: Registry[Callable[..., Tensor]] = Registry("t-sampler")


# -- weightings: (log_snr [B], J [B], options) -> weight on x0-MSE [B] -----------------------
@weightings.register("uniform")
def _uniform(lam: Tensor, jac: Tensor, **_: Any) -> Tensor:
    return jac


@weightings.register("min_snr")
def _min_snr(lam: Tensor, jac: Tensor, gamma: float = 5.0, **_: Any) -> Tensor:
    return torch.exp(lam).clamp(max=gamma)


@weightings.register("edm")
def _edm(lam: Tensor, jac: Tensor, sigma_data: float = 1.0, **_: Any) -> Tensor:
    return torch.exp(lam) + 1 / sigma_data**2


@weightings.register("sigmoid")
def _sigmoid(lam: Tensor, jac: Tensor, bias: float = 0.0, **_: Any) -> Tensor:
    return torch.exp(lam) * torch.sigmoid(bias - lam)


# -- t-samplers: (B, schedule, generator, device, options) -> t [B] -------------------------
def _uniform01(n: int, generator, device) -> Tensor:
    return torch.rand(n, generator=generator, device=device, dtype=torch.float64)


def time_range(t_sampler: str, options: dict[str, Any] | None) -> tuple[float, float]:
    """The schedule-time interval [low, high] a t-sampler trains on: (0, 1) unless the
    uniform or low_discrepancy sampler is truncated with ``low`` / ``high`` options (a model
    trained on t <= high < 1 only refines: it cannot start from pure noise)."""
    options = dict(options or {})
    if t_sampler not in ("uniform", "low_discrepancy"):
        bad = sorted(set(options) & {"low", "high"})
        if bad:
            raise ValueError(f"t_options {bad} are for the uniform and low_discrepancy "
                             f"t-samplers, not {t_sampler!r}")
        return 0.0, 1.0
    low, high = float(options.get("low", 0.0)), float(options.get("high", 1.0))
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"t_options need 0 <= low < high <= 1, got low={low}, high={high}")
    return low, high


@time_samplers.register("uniform")
def _t_uniform(n: int, schedule: Schedule, generator=None, device=None, low: float = 0.0,
               high: float = 1.0, **_: Any) -> Tensor:
    """t ~ U[low, high] (default [0, 1]; a truncated range trains a refiner, as in SDEdit's
    partial reverse process, Meng et al. 2022)."""
    return low + (high - low) * _uniform01(n, generator, device)


@time_samplers.register("low_discrepancy")
def _t_low_discrepancy(n: int, schedule: Schedule, generator=None, device=None,
                       low: float = 0.0, high: float = 1.0, **_: Any):
    """Kingma et al. (2021, VDM): one uniform offset, then evenly spaced in [0, 1), mapped
    onto [low, high]."""
    u0 = _uniform01(1, generator, device)
    u = (u0 + torch.arange(n, device=device, dtype=torch.float64) / n) % 1.0
    return low + (high - low) * u


@time_samplers.register("lognormal")
def _t_lognormal(n: int, schedule: Schedule, generator=None, device=None,
                 p_mean: float = -1.2, p_std: float = 1.2, **_: Any) -> Tensor:
    """Karras et al. (2022): ln(sigma / alpha) ~ N(p_mean, p_std^2), mapped to t."""
    z = torch.randn(n, generator=generator, device=device, dtype=torch.float64)
    return schedule.t_from_log_snr(-2 * (p_mean + p_std * z))


@time_samplers.register("logit_normal")
def _t_logit_normal(n: int, schedule: Schedule, generator=None, device=None,
                    loc: float = 0.0, scale: float = 1.0, **_: Any) -> Tensor:
    """Esser et al. (2024): t = sigmoid(N(loc, scale^2))."""
    z = torch.randn(n, generator=generator, device=device, dtype=torch.float64)
    return torch.sigmoid(loc + scale * z)


def sample_t(name: str, n: int, schedule: Schedule, generator: torch.Generator | None = None,
             device: Any = None, **options: Any) -> Tensor:
    """Draw n training times, kept where log-SNR is finite (|lambda| <= LOG_SNR_LIMIT)."""
    t = time_samplers.get(name)(n, schedule, generator=generator, device=device, **options)
    lo, hi = schedule.t_from_log_snr(torch.tensor([LOG_SNR_LIMIT, -LOG_SNR_LIMIT],
                                                  dtype=torch.float64)).tolist()
    return t.clamp(lo, hi).float()


class DiffusionLoss:
    """Denoising loss with a weighting and a t-sampler.

    Args:
        weighting: "uniform", "min_snr", "edm" or "sigmoid".
        t_sampler: "uniform", "low_discrepancy", "lognormal" or "logit_normal".
        weighting_options / t_options: keyword options of those (gamma, bias, p_mean, ...;
            ``low`` / ``high`` truncate the uniform and low_discrepancy samplers to
            [low, high]: a model trained on t <= high < 1 is a refiner, see ``time_range``).
        self_condition: self-conditioning (Chen et al. 2022, "Analog Bits", sec. 3.2): for
            half the batches (a coin drawn from ``generator``) x0_hat is first computed
            without gradient from the same x_t with ``x_self_cond = 0`` and then fed to the
            backbone as ``x_self_cond``; the other half get ``x_self_cond = 0``. The
            backbone must accept ``x_self_cond``.
        coupling: "independent" (default) or "minibatch_ot": the batch's noise draws are
            re-paired with its data by the assignment of least total squared distance
            (minibatch optimal transport, Tong et al. 2023; Pooladian et al. 2023), only
            between samples of the same shape (molecules of the same atom count); meant
            for the ``flow`` schedule.

    Shapes:
        x0: [B, ...] (or the noise space's ragged layout); returns losses [B] and t [B].
    """

    def __init__(self, weighting: str = "uniform", t_sampler: str = "uniform",
                 weighting_options: dict | None = None, t_options: dict | None = None,
                 self_condition: bool = False, coupling: str = "independent"):
        if coupling not in ("independent", "minibatch_ot"):
            raise ValueError(f"coupling must be independent or minibatch_ot, got {coupling!r}")
        self.coupling = coupling
        self.self_condition = bool(self_condition)
        self.weighting_name = weighting
        self.weighting = weightings.get(weighting)
        self.t_sampler = t_sampler
        time_samplers.get(t_sampler)  # fail early on an unknown name
        self.weighting_options = dict(weighting_options or {})
        self.t_options = dict(t_options or {})
        #: the schedule times trained on (``t_options`` low / high; (0, 1) by default)
        self.time_range = time_range(t_sampler, self.t_options)

    def __call__(self, denoiser: Denoiser, x0: Tensor, t: Tensor | None = None,
                 generator: torch.Generator | None = None, noise_space=None,
                 **cond: Any) -> tuple[Tensor, Tensor]:
        space = noise_space or denoiser.noise_space
        n = space.batch_size(x0)
        if t is None:
            t = sample_t(self.t_sampler, n, denoiser.schedule, generator, x0.device,
                         **self.t_options)
        t = t.to(x0.dtype)
        eps = space.project(space.sample_like(x0, generator))
        if self.coupling == "minibatch_ot":
            eps = ot_pair(x0, eps, space)
        a, s = denoiser.schedule.alpha_sigma(t)
        x_t = space.mix(x0, eps, a, s)
        if self.self_condition:
            cond = {**cond, "x_self_cond": self_condition_input(denoiser, x_t, t, space,
                                                                generator, cond)}
        out, _, a_x, s_x = denoiser.predict(x_t, t, noise_space=space, **cond)
        target = denoiser.target.value(x0, eps, a_x, s_x)
        per_sample = space.mean((out - target) ** 2)
        lam = denoiser.schedule.log_snr(t)
        opts = {"sigma_data": denoiser.sigma_data, **self.weighting_options}
        if self.weighting_name == "uniform":
            return per_sample, t
        jac = denoiser.target.jacobian(a, s)
        return per_sample * self.weighting(lam, jac, **opts) / jac, t


def ot_assignment(cost: Tensor) -> Tensor:
    """perm minimising sum_i cost[i, perm[i]] (scipy's linear_sum_assignment)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost.detach().double().cpu().numpy())
    perm = torch.empty(len(rows), dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm


def ot_pair(x0: Tensor, eps: Tensor, space) -> Tensor:
    """eps re-paired with x0 by minibatch optimal transport (Tong et al. 2023, sec. 3.2):
    within every set of same-shaped samples, sample i gets the noise of sample perm[i],
    perm minimising the total squared distance ||x0_i - eps_perm[i]||^2."""
    rows = space.sample_rows(x0)
    groups: dict[int, list[int]] = {}
    for b, r in enumerate(rows):
        groups.setdefault(r.numel(), []).append(b)
    out = eps.clone()
    for members in groups.values():
        if len(members) < 2:
            continue
        idx = torch.stack([rows[b] for b in members])  # [G, n]
        xs = x0[idx].reshape(len(members), -1)
        es = eps[idx].reshape(len(members), -1)
        perm = ot_assignment(torch.cdist(xs.double(), es.double()) ** 2).to(idx.device)
        out[idx.reshape(-1)] = eps[idx[perm].reshape(-1)]
    return out


def self_condition_input(denoiser: Denoiser, x_t: Tensor, t: Tensor, space,
                         generator: torch.Generator | None, cond: dict[str, Any]) -> Tensor:
    """The training-time ``x_self_cond``: with probability 1/2 (one coin per batch, as in
    Chen et al. 2022, Listing 1) the no-gradient x0_hat of x_t given zeros, else zeros."""
    zeros = torch.zeros_like(x_t)
    coin = torch.rand(1, generator=generator, device=x_t.device)
    if float(coin) >= 0.5:
        return zeros
    with torch.no_grad():
        return denoiser.predict(x_t, t, noise_space=space, x_self_cond=zeros,
                                **cond)[1].detach()


def vlb(denoiser: Denoiser, x0: Tensor, num_steps: int = 1000,
        generator: torch.Generator | None = None, noise_space=None,
        **cond: Any) -> dict[str, Tensor]:
    """One-sample Monte-Carlo estimate of the discrete-time variational bound, in nats.

    With T = num_steps steps t_i = i / T and s = t_(i-1) (Kingma et al. 2021, eq. 13-15;
    Hoogeboom et al. 2022 for the zero-CoM degrees of freedom):

        -log p(x) <= KL(q(z_1|x) || N(0, I))                            (prior)
                   + T/2 E_i[(SNR(s) - SNR(t)) ||x - x0_hat(z_t)||^2]   (diffusion)
                   - log N(x; x0_hat(z_0), sigma_0^2/alpha_0^2 I)       (reconstruction)

    Degrees of freedom come from the noise space, so a zero-centre-of-mass space counts
    (N - 1) * 3 positional dimensions. Valid for any schedule; the prior term is only small
    for schedules that end near pure noise.

    Returns:
        dict with "nll", "prior", "diffusion", "reconstruction", each of shape [B] (nats).
    """
    space = noise_space or denoiser.noise_space
    sched = denoiser.schedule
    n = space.batch_size(x0)
    dof = space.dof(x0).to(torch.float64)

    def noisy(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, s = sched.alpha_sigma(t)
        eps = space.project(space.sample_like(x0, generator))
        return space.mix(x0, eps, a, s), a, s

    # diffusion term at one random step per sample
    i = torch.randint(1, num_steps + 1, (n,), generator=generator, device=x0.device)
    t = (i / num_steps).to(torch.float64)
    # the clamped log-SNR (+-LOG_SNR_LIMIT): a schedule whose SNR is infinite at t = 0
    # (flow: sigma(0) = 0) gets the bound of the nearly clean level instead of inf - inf
    snr_t = torch.exp(sched.log_snr(t))
    snr_s = torch.exp(sched.log_snr(t - 1.0 / num_steps))
    def x0_hat(z: Tensor, tt: Tensor) -> Tensor:
        return denoiser.predict(z, tt.to(x0.dtype), noise_space=space, **cond)[1]

    z_t, _, _ = noisy(t.to(x0.dtype))
    err = space.sum((x0 - x0_hat(z_t, t)) ** 2).double()
    diffusion = 0.5 * num_steps * (snr_s - snr_t) * err

    # prior: KL(N(a1 x, s1^2) || N(0, 1)) summed over the free dimensions
    one = torch.ones(n, dtype=torch.float64, device=x0.device)
    a1, s1 = sched.alpha_sigma64(sched.log_snr64(one))
    sq = space.sum(x0.double() ** 2)
    prior = 0.5 * (a1**2 * sq + dof * (s1**2 - 1 - torch.log(s1**2)))

    # reconstruction with a Gaussian decoder of variance sigma_0^2 / alpha_0^2
    zero = torch.zeros(n, dtype=torch.float64, device=x0.device)
    var0 = torch.exp(-sched.log_snr(zero))
    z_0, _, _ = noisy(zero.to(x0.dtype))
    err0 = space.sum((x0 - x0_hat(z_0, zero)) ** 2).double()
    recon = 0.5 * err0 / var0 + 0.5 * dof * torch.log(2 * math.pi * var0)

    return {"nll": prior + diffusion + recon, "prior": prior, "diffusion": diffusion,
            "reconstruction": recon}
