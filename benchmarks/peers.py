"""Side-by-side runs of our samplers and diffusers' schedulers on the Gaussian-mixture toy.

Shared by ``tests/test_peer_parity.py`` and ``benchmarks/sampler_overhead.py``
(``benchmarks/error_vs_nfe.py`` has its own, broader set-up in ``benchmarks/few_step.py``).
Everything is measured in the variance-exploding frame of Karras et al. (2022): y = x / alpha
at noise level sigma / alpha, where the exact denoiser of the mixture is
``E[x0 | y] = mixture.posterior_mean(y, 1, level)`` whatever the schedule, and the
probability-flow ODE is dy/dlevel = (y - D(y, level)) / level.

Accuracy is the RMS distance of each sample to the *exact* ODE endpoint started from that
method's own start state and noise level (diffusers' DDIM and DPM-Solver start from x_T =
noise at training step 999, its Euler and Heun from noise * init_noise_sigma in their scaled
frame, ours from noise * level_max of our grid). The exact endpoint is integrated with
scipy's DOP853 (rtol = atol = 1e-10) down to the schedule's smallest noise level, where the
exact denoiser returns the clean sample: the limit that every sampler here converges to as
its step count grows, since all of them end with a denoiser evaluation at their last level.

diffusers settings: DDPM ``linear`` betas 1e-4 to 0.02 over 1000 steps (set explicitly:
HeunDiscreteScheduler's default betas are Stable Diffusion's), ``timestep_spacing="trailing"``
(starts at the last training step, i.e. from pure noise, as our grids do), epsilon
prediction, and otherwise its defaults, except ``clip_sample=False`` for DDIMScheduler: its
default clamps x0_hat to [-1, 1], an image-range assumption that would wreck a mixture of
radius 2 and is no part of the solver. DPMSolverMultistepScheduler runs
``algorithm_type="dpmsolver++", solver_order=2`` (its defaults, stated explicitly).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # scripts run as files; the package is not installed
    sys.path.insert(0, str(REPO))

from diffplat import samplers, schedules  # noqa: E402
from diffplat.samplers.grids import noise_levels, sampler_defaults  # noqa: E402
from diffplat.schedules import Schedule  # noqa: E402
from domains.toy import ExactDenoiser, GaussianMixture  # noqa: E402
from domains.toy.metrics import mmd2_to_mixture  # noqa: E402

#: our sampler -> the diffusers scheduler that implements the same method
PEERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
}

#: constructor options of every diffusers scheduler here (otherwise its defaults). The betas
#: are spelled out because HeunDiscreteScheduler defaults to Stable Diffusion's
#: (0.00085, 0.012), not DDPM's linear (1e-4, 0.02) like the other three.
COMMON_OPTIONS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                  "beta_schedule": "linear", "timestep_spacing": "trailing"}
PEER_OPTIONS = {
    "ddim": {"clip_sample": False},
    "euler": {},
    "heun": {},
    "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2},
}

#: diffusers schedulers whose sample lives in the scaled (variance-exploding) frame, i.e.
#: x = noise * init_noise_sigma at the start and scale_model_input divides by sqrt(s^2 + 1).
#: The others keep the DDPM sample x_t = sqrt(ab) x0 + sqrt(1 - ab) eps.
VE_FRAME = frozenset({"euler", "heun"})


def peer_options(name: str) -> dict:
    return {**COMMON_OPTIONS, **PEER_OPTIONS[name]}


def make_peer(name: str, **overrides):
    """The diffusers scheduler paired with our sampler ``name``."""
    import diffusers

    cls = getattr(diffusers, PEERS[name])
    return cls(**{**peer_options(name), **overrides})


def peer_steps_for_nfe(name: str, nfe: int) -> int:
    """diffusers' num_inference_steps for at most ``nfe`` model calls (Heun: 2N - 1)."""
    return max(1, (nfe + 1) // 2) if name == "heun" else max(1, nfe)


@dataclass
class Run:
    """One sampler run: output, where it started (VE frame) and how many evaluations."""

    x0: Tensor
    y0: Tensor
    level0: float
    nfe: int


def ve_denoiser(mix: GaussianMixture) -> Callable[[Tensor, float], Tensor]:
    """The exact E[x0 | y] at noise level ``level`` in the variance-exploding frame."""
    return lambda y, level: mix.posterior_mean(y, 1.0, level)


def end_level(schedule: Schedule) -> float:
    """The schedule's smallest noise level (training step 0 for DDPM tables).

    The reference ODE stops here. diffusers' trailing grids tend to D at training step 0 as
    their step count grows, our grids to D at ``level_range(schedule)[0]`` =
    max(this, 0.002); for the linear table both are 0.0100005, so one reference serves both.
    """
    return float(schedule.noise_level(torch.tensor(0.0, dtype=torch.float64)))


def exact_endpoint(mix: GaussianMixture, y0: Tensor, level0: float, level_end: float,
                   rtol: float = 1e-10, atol: float = 1e-10) -> Tensor:
    """The exact probability-flow ODE endpoint from state y0 [B, d] at noise level level0.

    Integrates dy/ds = y - D(y, e^s) in s = log(level) with scipy's DOP853 (an independent
    solver) from level0 down to level_end, then returns D there, the clean sample.
    """
    from scipy.integrate import solve_ivp

    den = ve_denoiser(mix)
    shape = y0.shape

    def f(s, y):
        yy = torch.from_numpy(y).reshape(shape)
        return (yy - den(yy, math.exp(s))).reshape(-1).numpy()

    sol = solve_ivp(f, (math.log(level0), math.log(level_end)),
                    y0.double().reshape(-1).numpy(), method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference ODE solve failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1]).reshape(shape)
    return den(y, level_end)


class ReferenceCache:
    """Exact endpoints keyed by start (level, state), so methods sharing a start share one
    DOP853 solve."""

    def __init__(self, mix: GaussianMixture, level_end: float):
        self.mix, self.level_end = mix, level_end
        self._solved: list[tuple[float, Tensor, Tensor]] = []

    def __call__(self, run: Run) -> Tensor:
        for level, y0, ref in self._solved:
            if level == run.level0 and torch.equal(y0, run.y0):
                return ref
        ref = exact_endpoint(self.mix, run.y0, run.level0, self.level_end)
        self._solved.append((run.level0, run.y0, ref))
        return ref


def rms(a: Tensor, b: Tensor) -> float:
    """sqrt(mean over samples of |a - b|^2)."""
    return float((a.double() - b.double()).pow(2).sum(1).mean().sqrt())


def run_ours(name: str, noise: Tensor, schedule: Schedule, mix: GaussianMixture,
             nfe: int | None = None, steps: int | None = None, **options) -> Run:
    """Our sampler ``name`` on the exact denoiser, at ``nfe`` evaluations (or ``steps``)."""
    if steps is None:
        steps = 20 if name == "adaptive" else samplers.steps_for_nfe(name, nfe)
    if name == "adaptive":
        level0 = float(noise_levels(schedule, 1, "karras", level_min=options.get("level_min"),
                                    level_max=options.get("level_max"))[0])
    else:  # the sampler's own defaults where the options name none
        full = {**sampler_defaults(name, schedule), **options}
        level0 = float(noise_levels(schedule, steps, full.get("spacing"), full.get("rho"),
                                    full.get("level_min"), full.get("level_max"))[0])
    stats: dict = {}
    x0 = samplers.get(name)(ExactDenoiser(mix, schedule), noise, schedule, steps,
                            stats=stats, **options)
    return Run(x0=x0, y0=noise.double() * level0, level0=level0, nfe=stats["nfe"])


def run_peer(name: str, noise: Tensor, mix: GaussianMixture, nfe: int,
             **overrides) -> Run:
    """diffusers' scheduler paired with ``name``, in its usual loop, on the exact denoiser.

    The model is the exact E[x0 | x_t] at the scheduler's own discrete timestep (alpha_bar =
    scheduler.alphas_cumprod[timestep]) turned into the epsilon prediction the scheduler
    expects; for Euler and Heun it sees the scaled input, as in a diffusers pipeline.
    """
    sched = make_peer(name, **overrides)
    sched.set_timesteps(peer_steps_for_nfe(name, nfe))
    ab = sched.alphas_cumprod.double()
    calls = 0

    def model(x_in: Tensor, timestep: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        a = ab[int(round(float(timestep)))]
        x0 = mix.posterior_mean(x_in, a.sqrt(), (1 - a).sqrt()).to(x_in.dtype)
        return (x_in - a.sqrt() * x0) / (1 - a).sqrt()

    x = noise * sched.init_noise_sigma
    t_first = int(round(float(sched.timesteps[0])))
    if name in VE_FRAME:
        level0 = float(sched.sigmas[0])
        y0 = x.double()
    else:
        a0 = float(ab[t_first])
        level0 = math.sqrt((1 - a0) / a0)
        y0 = x.double() / math.sqrt(a0)
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        x = sched.step(model(x_in, t), t, x).prev_sample
    return Run(x0=x, y0=y0, level0=level0, nfe=calls)


def evaluate(run: Run, refs: ReferenceCache, mix: GaussianMixture) -> dict:
    """ODE error to the exact endpoint from the run's own start, and MMD^2 to the mixture."""
    return {"nfe": run.nfe, "ode_err": rms(run.x0, refs(run)),
            "mmd2": mmd2_to_mixture(run.x0, mix), "level0": run.level0}


def linear_setup(n: int, seed: int = 0) -> tuple[Schedule, GaussianMixture, Tensor]:
    """The comparison's fixed ingredients: DDPM linear schedule, 2-D default mixture and
    float64 standard-normal start noise [n, 2]."""
    schedule = schedules.get("linear")
    mix = GaussianMixture.default()
    noise = torch.randn(n, mix.dim, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    return schedule, mix, noise


def write_marked(path: str | Path, tag: str, body: str,
                 heading: str = "# Core measurements") -> None:
    """Replace what lies between ``<!-- BEGIN tag -->`` and ``<!-- END tag -->`` in ``path``.

    A missing file is created with ``heading``; missing markers are appended at its end.
    Nothing outside the markers is touched.
    """
    path = Path(path)
    begin, end = f"<!-- BEGIN {tag} -->", f"<!-- END {tag} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if path.exists():
        text = path.read_text()
        i, j = text.find(begin), text.find(end)
        if i >= 0 and j > i:
            text = text[:i] + block + text[j + len(end):]
        else:
            if i >= 0 or j >= 0:
                raise ValueError(f"{path}: unbalanced markers for {tag!r}")
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f"{heading}\n\n{block}\n"
    path.write_text(text)


def machine_info() -> dict[str, str]:
    """Date, library versions, CPU model and thread count for benchmark headers."""
    import platform

    try:
        import diffusers

        dver = diffusers.__version__
    except ImportError:
        dver = "not installed"
    from diffplat.api import cpu_name

    cpu = cpu_name()
    try:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "unknown"
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
            "diffusers": dver, "python": platform.python_version(), "cpu": cpu,
            "threads": str(torch.get_num_threads()), "load": load}
