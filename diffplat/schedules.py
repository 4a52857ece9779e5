"""Noise schedules in continuous time t in [0, 1].

A schedule fixes how clean data x0 and Gaussian noise eps mix at time t:

    x_t = alpha(t) * x0 + sigma(t) * eps,      log_snr(t) = log(alpha^2 / sigma^2).

Every schedule here is defined by a strictly decreasing ``log_snr(t)`` with a closed-form
inverse, plus a *family* that turns a log-SNR into (alpha, sigma):

* ``vp``   variance preserving, alpha^2 + sigma^2 = 1 (DDPM, cosine, sigmoid, polynomial);
* ``ve``   variance exploding, alpha = 1 (Karras et al. 2022, "EDM");
* ``flow`` alpha + sigma = 1 (rectified flow / flow matching).

All arithmetic runs in float64 and is cast back to the caller's dtype, so float32 inputs are
safe at both ends: alpha and sigma are always finite and in [0, 1] (or [0, sigma_max]), and
``log_snr`` is clamped to +-LOG_SNR_LIMIT where the exact value would be infinite.

Samplers work in the variance-exploding frame of Karras et al.: the noise level
``noise_level(t) = sigma / alpha = exp(-log_snr / 2)`` and x / alpha. The schedule therefore
only decides *where* on the noise-level axis a given t lies.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffplat.registry import Registry

#: |log SNR| beyond which values are clamped (exp(20 / 2) ~ 2.2e4 noise level).
LOG_SNR_LIMIT = 20.0

registry: Registry[type[Schedule]] = Registry("schedule")


def _as_t(t: Tensor | float) -> Tensor:
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def _check_t(t: Tensor) -> None:
    bad = ~((t >= 0) & (t <= 1))  # also catches NaN
    if bool(bad.any()):
        value = t[bad].flatten()[0].item()
        raise ValueError(f"schedule time t must lie in [0, 1]; got {value}")


class Schedule:
    """Base class: subclasses implement ``_lam(t)`` and ``_t(lam)`` in float64.

    Args:
        shift: added to log_snr everywhere (a log-SNR shift; ``shift = -2 log s`` is the
            resolution shift of Hoogeboom et al. 2023 / Esser et al. 2024).
        zero_terminal_snr: rescale sqrt(alpha_bar) so that alpha(1) = 0 exactly (Lin et al.
            2024, Algorithm 1). Only for variance-preserving schedules.

    Shapes:
        every method takes t or log_snr of any shape (usually [B]) and returns that shape.
    """

    name = "base"
    family = "vp"

    def __init__(self, shift: float = 0.0, zero_terminal_snr: bool = False):
        self.shift = float(shift)
        self.zero_terminal_snr = bool(zero_terminal_snr)
        if self.zero_terminal_snr:
            if self.family != "vp":
                raise ValueError(f"zero_terminal_snr applies to VP schedules, not {self.name!r}")
            ends = self._lam(torch.tensor([0.0, 1.0], dtype=torch.float64)) + self.shift
            self._a0, self._aT = torch.sigmoid(ends).sqrt().tolist()

    # -- to implement -----------------------------------------------------------------------
    def _lam(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _t(self, lam: Tensor) -> Tensor:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """Constructor options beyond the base ones (for configs and checkpoints)."""
        return {}

    # -- float64 log-SNR with the shift and terminal rescale (public: losses and NLLs use it)
    def log_snr64(self, t: Tensor) -> Tensor:
        """log(alpha^2 / sigma^2) at a float64 t, unclamped and unchecked: the exact value
        that likelihood terms need (it may be +-inf at the ends of some schedules)."""
        lam = self._lam(t) + self.shift
        if self.zero_terminal_snr:
            a = torch.sigmoid(lam).sqrt()
            a = (a - self._aT) * (self._a0 / (self._a0 - self._aT))
            a = a.clamp(0.0, 1.0)
            lam = 2 * torch.log(a) - torch.log1p(-a * a)
        return lam

    def _t_from_log_snr64(self, lam: Tensor) -> Tensor:
        if self.zero_terminal_snr:
            a = torch.sigmoid(lam).sqrt()
            a = a * ((self._a0 - self._aT) / self._a0) + self._aT
            lam = 2 * torch.log(a) - torch.log1p(-a * a)
        return self._t(lam - self.shift).clamp(0.0, 1.0)

    def alpha_sigma64(self, lam: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) at a float64 log-SNR, in this schedule's family (VP, VE, flow)."""
        if self.family == "vp":
            return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
        if self.family == "ve":
            return torch.ones_like(lam), torch.exp(-lam / 2)
        # flow: alpha + sigma = 1, sigma / alpha = exp(-lam / 2)
        inv = torch.exp(lam / 2)  # alpha / sigma, may be inf or 0
        return 1 / (1 + 1 / inv), 1 / (1 + inv)

    # -- public API ---------------------------------------------------------------------------
    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Both mixing coefficients at t, in t's dtype."""
        t = _as_t(t)
        _check_t(t)
        a, s = self.alpha_sigma64(self.log_snr64(t.double()))
        return a.to(t.dtype), s.to(t.dtype)

    def alpha(self, t: Tensor | float) -> Tensor:
        return self.alpha_sigma(t)[0]

    def sigma(self, t: Tensor | float) -> Tensor:
        return self.alpha_sigma(t)[1]

    def log_snr(self, t: Tensor | float) -> Tensor:
        """log(alpha^2 / sigma^2), clamped to +-LOG_SNR_LIMIT."""
        t = _as_t(t)
        _check_t(t)
        lam = self.log_snr64(t.double()).clamp(-LOG_SNR_LIMIT, LOG_SNR_LIMIT)
        return lam.to(t.dtype)

    def t_from_log_snr(self, lam: Tensor | float) -> Tensor:
        """Inverse of ``log_snr`` (values beyond the schedule's range map to its ends)."""
        lam = _as_t(lam)
        if bool(torch.isnan(lam).any()):
            raise ValueError("log_snr is NaN")
        return self._t_from_log_snr64(lam.double()).to(lam.dtype)

    def noise_level(self, t: Tensor | float) -> Tensor:
        """sigma / alpha: the variance-exploding noise level of Karras et al. (2022)."""
        return torch.exp(-self.log_snr(t) / 2)

    def t_from_noise_level(self, level: Tensor | float) -> Tensor:
        level = _as_t(level)
        return self.t_from_log_snr(-2 * torch.log(level.double())).to(level.dtype)

    def log_snr_range(self) -> tuple[float, float]:
        """(lowest, highest) log-SNR this schedule reaches, clamped to +-LOG_SNR_LIMIT."""
        lam = self.log_snr(torch.tensor([1.0, 0.0], dtype=torch.float64))
        return float(lam[0]), float(lam[1])

    def config(self) -> dict[str, Any]:
        cfg = {"name": self.name, **self.options()}
        if self.shift:
            cfg["shift"] = self.shift
        if self.zero_terminal_snr:
            cfg["zero_terminal_snr"] = True
        return cfg

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class DiscreteVPSchedule(Schedule):
    """A DDPM schedule given by its discrete ``alphas_cumprod`` table.

    Training step i of N sits at t = i / (N - 1); log-SNR is interpolated linearly in t
    between steps (as k-diffusion's DiscreteSchedule does with log sigma), so the table is
    reproduced exactly at every training step and both ends stay finite.
    """

    num_train_steps: int

    def _build(self, alphas_cumprod: Tensor) -> None:
        ac = alphas_cumprod.double()
        self.alphas_cumprod = ac
        self._table = torch.log(ac) - torch.log1p(-ac)  # decreasing
        self.num_train_steps = len(ac)

    def _lam(self, t: Tensor) -> Tensor:
        table = self._table.to(t.device)
        pos = t * (self.num_train_steps - 1)
        i0 = pos.floor().clamp(0, self.num_train_steps - 2).long()
        frac = pos - i0
        return table[i0] * (1 - frac) + table[i0 + 1] * frac

    def _t(self, lam: Tensor) -> Tensor:
        neg = -self._table.to(lam.device)  # increasing
        flat = lam.reshape(-1)
        i1 = torch.searchsorted(neg, -flat).clamp(1, self.num_train_steps - 1)
        i0 = i1 - 1
        frac = ((-flat) - neg[i0]) / (neg[i1] - neg[i0])
        t = (i0 + frac.clamp(0, 1)) / (self.num_train_steps - 1)
        return t.reshape(lam.shape)

    def timestep_of(self, t: Tensor) -> Tensor:
        """The (possibly fractional) training step index of continuous t."""
        return t * (self.num_train_steps - 1)


@registry.register("linear")
class LinearSchedule(DiscreteVPSchedule):
    """DDPM's linear betas (Ho et al. 2020): beta from 1e-4 to 0.02 over 1000 steps.

    Matches diffusers' ``beta_schedule="linear"`` alphas_cumprod.
    """

    name = "linear"

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02,
                 num_train_steps: int = 1000, **base: Any):
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
        self._build(torch.cumprod(1 - betas, 0))
        super().__init__(**base)

    def options(self) -> dict[str, Any]:
        return {"beta_start": self.beta_start, "beta_end": self.beta_end,
                "num_train_steps": self.num_train_steps}


@registry.register("cosine")
class CosineSchedule(DiscreteVPSchedule):
    """Cosine schedule of Nichol & Dhariwal (2021), betas capped at 0.999.

    Matches diffusers' ``beta_schedule="squaredcos_cap_v2"`` alphas_cumprod.
    """

    name = "cosine"

    def __init__(self, s: float = 0.008, max_beta: float = 0.999,
                 num_train_steps: int = 1000, **base: Any):
        self.s, self.max_beta = float(s), float(max_beta)

        def f(u: Tensor) -> Tensor:
            return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        i = torch.arange(num_train_steps, dtype=torch.float64)
        betas = (1 - f((i + 1) / num_train_steps) / f(i / num_train_steps)).clamp(max=max_beta)
        self._build(torch.cumprod(1 - betas, 0))
        super().__init__(**base)

    def options(self) -> dict[str, Any]:
        return {"s": self.s, "max_beta": self.max_beta, "num_train_steps": self.num_train_steps}


@registry.register("sigmoid")
class SigmoidSchedule(Schedule):
    """Sigmoid schedule (Jabri et al. 2023; Chen 2023):

    alpha_bar(t) = (sig(end/tau) - sig((t (end - start) + start) / tau))
                   / (sig(end/tau) - sig(start/tau)).
    """

    name = "sigmoid"

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0, **base: Any):
        if not end > start or tau <= 0:
            raise ValueError("sigmoid schedule needs end > start and tau > 0")
        self.start, self.end, self.tau = float(start), float(end), float(tau)
        self._vs = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
        self._ve = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
        super().__init__(**base)

    def _lam(self, t: Tensor) -> Tensor:
        v = torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau)
        num = self._ve - v                      # proportional to alpha_bar
        den = v - self._vs                      # proportional to 1 - alpha_bar
        return torch.log(num) - torch.log(den)

    def _t(self, lam: Tensor) -> Tensor:
        ab = torch.sigmoid(lam)
        v = self._ve - ab * (self._ve - self._vs)
        return (self.tau * torch.logit(v) - self.start) / (self.end - self.start)

    def options(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "tau": self.tau}


@registry.register("polynomial")
class PolynomialSchedule(Schedule):
    """EDM-molecules' ``polynomial_2`` (Hoogeboom et al. 2022):

    alpha_bar(t) = (1 - 2 s) (1 - t^power)^2 + s, with precision s = 1e-5.
    """

    name = "polynomial"

    def __init__(self, power: float = 2.0, precision: float = 1e-5, **base: Any):
        self.power, self.precision = float(power), float(precision)
        super().__init__(**base)

    def _lam(self, t: Tensor) -> Tensor:
        s = self.precision
        base = (1 - t**self.power) ** 2
        ab = (1 - 2 * s) * base + s
        one_minus = (1 - 2 * s) * (1 - base) + s
        return torch.log(ab) - torch.log(one_minus)

    def _t(self, lam: Tensor) -> Tensor:
        s = self.precision
        base = ((torch.sigmoid(lam) - s) / (1 - 2 * s)).clamp(0, 1)
        return (1 - base.sqrt()).clamp(0, 1) ** (1 / self.power)

    def options(self) -> dict[str, Any]:
        return {"power": self.power, "precision": self.precision}


@registry.register("edm")
class EDMSchedule(Schedule):
    """Karras et al. (2022): alpha = 1 and sigma(t) interpolated with exponent rho,

    sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho,

    so that uniform t is the paper's rho = 7 step spacing.
    """

    name = "edm"
    family = "ve"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 **base: Any):
        if not 0 < sigma_min < sigma_max:
            raise ValueError("edm schedule needs 0 < sigma_min < sigma_max")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self._a = sigma_min ** (1 / rho)
        self._b = sigma_max ** (1 / rho)
        super().__init__(**base)

    def _lam(self, t: Tensor) -> Tensor:
        return -2 * self.rho * torch.log(self._a + t * (self._b - self._a))

    def _t(self, lam: Tensor) -> Tensor:
        root = torch.exp(-lam / (2 * self.rho))
        return (root - self._a) / (self._b - self._a)

    def options(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho}


@registry.register("flow")
class FlowSchedule(Schedule):
    """Rectified flow / flow matching (Liu et al. 2023; Lipman et al. 2023):
    alpha = 1 - t, sigma = t."""

    name = "flow"
    family = "flow"

    def _lam(self, t: Tensor) -> Tensor:
        return 2 * (torch.log1p(-t) - torch.log(t))

    def _t(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-lam / 2)


def get(name: str | Schedule, **options: Any) -> Schedule:
    """Build a schedule by name, e.g. ``get("cosine", shift=-1.0)``.

    Unknown names raise an error listing the valid ones. A Schedule instance passes through.
    """
    if isinstance(name, Schedule):
        if options:
            raise ValueError("options cannot be given with a Schedule instance")
        return name
    cls = registry.get(name)
    try:
        return cls(**options)
    except TypeError as err:
        raise TypeError(f"schedule {name!r}: {err}") from None


def names() -> list[str]:
    return registry.names()
