"""The few-step comparison's parts: problems, runners for ours, diffusers and k-diffusion,
and the two metrics. Used by benchmarks/error_vs_nfe.py.

A *problem* is a schedule (VP: DDPM linear; VP cosine: the cosine table of Nichol & Dhariwal
2021, diffusers' "squaredcos_cap_v2"; VE: EDM sigmas 0.002 to 80) and a Gaussian
mixture whose exact denoiser E[x0 | x_t] is known, so every library runs on the true score
and any difference is its solver and grid. Everything is compared in the variance-exploding
frame y = x / alpha at noise level sigma / alpha, where the exact denoiser is
``mix.posterior_mean(y, 1, level)`` whatever the schedule.

Metrics, over every sample drawn (no filtering):

* ODE-endpoint error: RMS distance to the exact probability-flow ODE endpoint from the run's
  own start state and level (scipy DOP853 at rtol = atol = 1e-9 down to the schedule's
  smallest level, then the exact denoiser there), on the first ``ode_n`` samples;
* sliced W2: sqrt of the mean over 128 fixed random directions of the squared 1-D W2
  distance between the samples' and a fixed exact sample's projections (all samples);
  its floor is the same between two independent exact samples.

Each peer runs in its usual loop, with the exact denoiser evaluated at the noise level its
own step arithmetic uses (``scheduler.sigmas[i]``), turned into the epsilon its
``prediction_type`` expects. A sample that a library leaves at a small nonzero level
(diffusers' ``final_sigmas_type="sigma_min"``, DEIS, k-diffusion's dpm_fast) is divided by
alpha there, so all outputs live in the same frame.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from diffplat import samplers, schedules  # noqa: E402
from diffplat.samplers.grids import noise_levels  # noqa: E402

try:  # per-sampler default grids (diffplat >= issue #26); before that every sampler's were
    from diffplat.samplers.grids import sampler_defaults  # noqa: E402
except ImportError:  # pragma: no cover - the generic ones
    def sampler_defaults(name: str, schedule: Schedule) -> dict:
        return {}
from diffplat.schedules import Schedule  # noqa: E402
from domains.toy import ExactDenoiser, GaussianMixture  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

MIXTURES = {
    "2-D": dict(dim=2, components=8, std=0.3, seed=0),
    "16-D": dict(dim=16, components=12, std=0.05, seed=1),
}
SETTINGS = ("vp", "ve")  # the full sweep's (benchmarks/error_vs_nfe.py)
#: every setting a Problem takes: "cosine" is the VP cosine table
ALL_SETTINGS = ("vp", "cosine", "ve")
#: the schedule of each setting
SCHEDULES = {"vp": "linear", "cosine": "cosine", "ve": "edm"}
#: diffusers schedulers that keep their sample in the variance-exploding frame (x / alpha,
#: scaled by scale_model_input) rather than the VP one
VE_FRAME = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
            "HeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler")


def schedule_for(setting: str) -> Schedule:
    return schedules.get(SCHEDULES[setting])


def setting_label(setting: str) -> str:
    return {"cosine": "VP cosine"}.get(setting, setting.upper())


@dataclass
class Run:
    """One sampler run: output in the VE frame, its start (y0 at level0), evaluations."""

    x0: Tensor
    y0: Tensor
    level0: float
    nfe: int
    stochastic: bool = False


class Problem:
    """One schedule x mixture with fixed start noise, exact reference sample and caches.

    Args:
        setting: "vp" or "ve".
        mixture: a key of MIXTURES.
        n: samples per run; ode_n: how many of them the ODE-endpoint error uses.
    """

    def __init__(self, setting: str, mixture: str, n: int, ode_n: int, seed: int = 0):
        self.setting, self.mixture_name = setting, mixture
        self.schedule = schedule_for(setting)
        self.mix = GaussianMixture.default(**MIXTURES[mixture])
        gen = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(n, self.mix.dim, dtype=torch.float64, generator=gen)
        self.ode_n = min(ode_n, n)
        lo, _ = self.schedule.log_snr_range()[::-1]
        self.level_end = math.exp(-lo / 2)  # the schedule's smallest noise level
        pgen = torch.Generator().manual_seed(seed + 777)
        self.dirs = torch.randn(128, self.mix.dim, dtype=torch.float64, generator=pgen)
        self.dirs /= self.dirs.norm(dim=1, keepdim=True)
        self.exact = self.mix.sample(n, torch.Generator().manual_seed(seed + 1001))
        self._exact_proj = torch.sort(self.exact @ self.dirs.T, dim=0).values
        self._refs: list[tuple[float, Tensor, Tensor]] = []

    def subset(self, n: int) -> Problem:
        """The same problem on the first n start noises (sharing the ODE references)."""
        sub = object.__new__(Problem)
        sub.__dict__.update(self.__dict__)
        sub.noise = self.noise[:n]
        sub.exact = self.exact[:n]
        sub._exact_proj = torch.sort(sub.exact @ self.dirs.T, dim=0).values
        sub.ode_n = min(self.ode_n, n)
        return sub

    @property
    def label(self) -> str:
        return f"{setting_label(self.setting)}, {self.mixture_name}"

    def denoise_ve(self, y: Tensor, level: float) -> Tensor:
        return self.mix.posterior_mean(y, 1.0, level)

    # -- metrics ------------------------------------------------------------------------------
    def sw2(self, x: Tensor) -> float:
        proj = torch.sort(x.double() @ self.dirs.T, dim=0).values
        return float((proj - self._exact_proj).pow(2).mean().sqrt())

    def floor(self, seeds: int = 8) -> dict[str, float]:
        vals = [self.sw2(self.mix.sample(len(self.noise), torch.Generator().manual_seed(5000 + s)))
                for s in range(seeds)]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        return {"mean": mean, "std": std}

    def reference(self, y0: Tensor, level0: float) -> Tensor:
        for level, start, ref in self._refs:
            if level == level0 and torch.equal(start, y0):
                return ref
        from scipy.integrate import solve_ivp

        shape = y0.shape

        def f(s, y):
            yy = torch.from_numpy(y).reshape(shape)
            return (yy - self.denoise_ve(yy, math.exp(s))).reshape(-1).numpy()

        sol = solve_ivp(f, (math.log(level0), math.log(self.level_end)),
                        y0.reshape(-1).numpy(), method="DOP853", rtol=1e-9, atol=1e-9)
        if not sol.success:
            raise RuntimeError(f"reference ODE solve failed: {sol.message}")
        ref = self.denoise_ve(torch.from_numpy(sol.y[:, -1]).reshape(shape), self.level_end)
        self._refs.append((level0, y0, ref))
        return ref

    def evaluate(self, run: Run) -> dict:
        out = {"nfe": run.nfe, "sw2": self.sw2(run.x0), "level0": run.level0}
        if not bool(torch.isfinite(run.x0).all()):
            return {**out, "sw2": math.inf, "ode": math.inf}
        if not run.stochastic:
            k = self.ode_n
            ref = self.reference(run.y0[:k].contiguous(), run.level0)
            out["ode"] = float((run.x0[:k] - ref).pow(2).sum(1).mean().sqrt())
        return out


# -- ours ---------------------------------------------------------------------------------------
def run_ours(pb: Problem, name: str, nfe: int, steps: int | None = None, **options) -> Run:
    """Our sampler ``name`` at ``nfe`` evaluations (or ``steps`` steps), with ``options`` over
    its own defaults."""
    if name == "auto":  # what auto runs, so that its start level is known
        from diffplat.samplers.auto import choose

        name, table = choose(nfe, pb.schedule)
        options = {**table, **options}
    full = {**sampler_defaults(name, pb.schedule), **options}
    if steps is None:
        steps = samplers.steps_for_nfe(name, nfe, **full)
    grid = full.get("levels")
    if grid is None:
        grid = noise_levels(pb.schedule, steps, full.get("spacing"), full.get("rho"),
                            full.get("level_min"), full.get("level_max"),
                            full.get("denoise_final", True))
    level0 = float(grid[0])
    stats: dict = {}
    x0 = samplers.get(name)(ExactDenoiser(pb.mix, pb.schedule), pb.noise, pb.schedule, steps,
                            stats=stats, generator=torch.Generator().manual_seed(11),
                            **options)
    return Run(x0, pb.noise * level0, level0, stats["nfe"], name in samplers.STOCHASTIC)


# -- diffusers ----------------------------------------------------------------------------------
def diffusers_table(pb: Problem) -> dict:
    """Constructor options that give a diffusers VP scheduler this problem's 1000-step table:
    DDPM's linear betas, or for VE the betas whose alpha_bar = 1 / (1 + sigma^2) reproduce
    EDM's sigmas at t = i / 999 (so its Karras option spans exactly 0.002 to 80)."""
    if pb.setting == "vp":
        return {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                "beta_schedule": "linear"}
    if pb.setting == "cosine":
        return {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
    t = torch.arange(1000, dtype=torch.float64) / 999
    ab = 1 / (1 + pb.schedule.noise_level(t) ** 2)
    betas = 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
    return {"num_train_timesteps": 1000, "trained_betas": betas.tolist()}


def run_diffusers(pb: Problem, cls_name: str, nfe: int, steps: int | None = None,
                  grid: Tensor | None = None, **options) -> Run:
    """A diffusers scheduler in its usual loop. ``grid`` (K + 1 levels) replaces its own
    sigmas after set_timesteps: the same solver on another grid."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    edm = cls_name.startswith("EDM")
    base = {} if edm else diffusers_table(pb)
    sched = cls(**{**base, **options})
    if not edm:  # float64 tables, so only the solver differs (diffusers keeps float32)
        sched.alphas_cumprod = 1 / (1 + _table_levels(pb) ** 2)
        if hasattr(sched, "final_alpha_cumprod") and not sched.config.get("set_alpha_to_one"):
            sched.final_alpha_cumprod = sched.alphas_cumprod[0]  # DDIM's last level
    steps = steps or nfe
    sched.set_timesteps(steps)
    if grid is not None:
        sched.sigmas = grid.to(torch.float32).clone()
        sched.timesteps = torch.arange(len(grid) - 2, -1, -1)
    sigmas = _ddim_levels(sched, steps) if not hasattr(sched, "sigmas") else \
        sched.sigmas.double()
    level0 = float(sigmas[0])
    ve_frame = cls_name in VE_FRAME
    if edm:
        x = pb.noise * sched.init_noise_sigma
        y0 = x.clone()
    elif ve_frame:  # the same start state as ours and k-diffusion's: noise at level0
        x = pb.noise * level0
        y0 = x.clone()
    else:  # VP sample x = y / sqrt(1 + level^2)
        x = pb.noise * (level0 / math.sqrt(1 + level0**2))
        y0 = pb.noise * level0
    calls = 0
    gen = torch.Generator().manual_seed(11)
    for i, t in enumerate(sched.timesteps):
        level = float(sigmas[i])
        x_in = sched.scale_model_input(x, t)
        if edm:
            den = pb.denoise_ve(x, level)
            sd = sched.config.sigma_data
            c_skip = sd**2 / (level**2 + sd**2)
            c_out = level * sd / math.sqrt(level**2 + sd**2)
            out = (den - c_skip * x) / c_out
        else:
            alpha = 1 / math.sqrt(1 + level**2)
            den = pb.denoise_ve(x_in / alpha, level)
            out = (x_in - alpha * den) / (alpha * level)  # epsilon
        calls += 1
        step = sched.step(out, t, x, generator=gen) if "generator" in \
            sched.step.__code__.co_varnames else sched.step(out, t, x)
        x = step.prev_sample.double()
    last = float(sigmas[-1])
    if not edm and not ve_frame and last > 0:
        x = x * math.sqrt(1 + last**2)
    stochastic = "sde" in str(options.get("algorithm_type", "")) or "Ancestral" in cls_name \
        or float(options.get("eta", 0.0)) > 0
    return Run(x, y0, level0, calls, stochastic)


def _ddim_levels(sched, steps: int) -> Tensor:
    """DDIMScheduler keeps no sigmas: the noise levels of its timesteps, then the level its
    last step lands on (0 with ``set_alpha_to_one``, else training step 0's)."""
    ac = sched.alphas_cumprod.double()
    ts = sched.timesteps.long()
    levels = ((1 - ac[ts]) / ac[ts]).sqrt()
    final = float(sched.final_alpha_cumprod)
    return torch.cat([levels, levels.new_tensor([math.sqrt((1 - final) / final)])])


def _table_levels(pb: Problem) -> Tensor:
    t = torch.arange(1000, dtype=torch.float64) / 999
    return pb.schedule.noise_level(t)


# -- k-diffusion --------------------------------------------------------------------------------
def k_sampling():
    """k_diffusion.sampling without k_diffusion/__init__.py, whose imports (CLIP, clean-fid,
    dctorch with numpy < 2, ...) the samplers do not need."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ImportError("k-diffusion is not installed: pip install -e '.[bench]' (see the "
                          "Makefile's bench target)")
    if "k_diffusion" not in sys.modules:
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = pkg
    return importlib.import_module("k_diffusion.sampling")


def k_steps(name: str, nfe: int) -> int:
    """Sigmas (excluding the final 0) for at most ``nfe`` evaluations."""
    if name in ("sample_heun", "sample_dpm_2", "sample_dpmpp_2s_ancestral"):
        return max(1, (nfe + 1) // 2)
    return nfe


def run_kdiff(pb: Problem, name: str, nfe: int, grid: Tensor, **options) -> Run:
    """A k-diffusion sampler on the grid ``grid`` (sigmas ending in 0), or dpm_fast."""
    ks = k_sampling()
    calls = 0

    def model(x, sigma):
        nonlocal calls
        calls += 1
        return pb.denoise_ve(x, float(sigma.flatten()[0]))

    torch.manual_seed(11)  # k-diffusion's noise samplers draw from the global generator
    level0 = float(grid[0])
    x = pb.noise * level0
    fn = getattr(ks, name)
    if name == "sample_dpm_fast":
        smin = float(grid[-2]) if float(grid[-1]) == 0 else float(grid[-1])
        out = fn(model, x, smin, level0, nfe, disable=True, **options)
        out = out.double()
    else:
        out = fn(model, x, grid.to(x.dtype), disable=True, **options).double()
    stochastic = bool(options.get("eta", 0)) and "ancestral" in name or \
        (name.endswith("_sde") and options.get("eta", 1.0) != 0)
    return Run(out, x.clone(), level0, calls, stochastic)
