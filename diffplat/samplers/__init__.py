"""Samplers: pure functions with one signature and a registry.

    sampler(denoise, noise, schedule, steps, **options) -> x0

``denoise(x_t, t)`` returns x0_hat with t of shape [B]; ``noise`` is standard normal with the
data's shape. Common options: ``spacing`` and ``rho`` (see diffplat.samplers.grids),
``generator`` (torch.Generator for the noise of stochastic samplers), ``noise_space``,
``callback`` (called after every step with a dict), ``stats`` (a dict that receives "nfe"),
``check_finite``. Samplers keep no state between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffplat.registry import Registry
from diffplat.samplers.adams import sample_deis, sample_ipndm
from diffplat.samplers.adaptive import sample_adaptive
from diffplat.samplers.auto import choose
from diffplat.samplers.dpm import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
    sample_dpmpp_3m_sde,
)
from diffplat.samplers.grids import noise_levels, spacings
from diffplat.samplers.karras import (
    sample_ddim,
    sample_ddpm,
    sample_euler,
    sample_euler_ancestral,
    sample_euler_anneal,
    sample_heun,
)
from diffplat.samplers.unipc import sample_unipc
from diffplat.schedules import Schedule

Sampler = Callable[..., Tensor]


def sample_auto(denoise: Callable[[Tensor, Tensor], Tensor], noise: Tensor,
                schedule: Schedule, steps: int, **kw: Any) -> Tensor:
    """``auto``: the configuration of ``samplers.auto.choose(steps, schedule)`` (every entry
    makes one evaluation per step, so steps = NFE); explicit options win over the table's."""
    name, options = choose(steps, schedule)
    return get(name)(denoise, noise, schedule, steps, **{**options, **kw})


registry: Registry[Sampler] = Registry("sampler")
registry.register("ddpm", sample_ddpm)
registry.register("ddim", sample_ddim)
registry.register("euler", sample_euler)
registry.register("euler_ancestral", sample_euler_ancestral)
registry.register("heun", sample_heun)
registry.register("euler_anneal", sample_euler_anneal)
registry.register("dpmpp_2m", sample_dpmpp_2m)
registry.register("dpmpp_2m_sde", sample_dpmpp_2m_sde)
registry.register("dpmpp_3m", sample_dpmpp_3m)
registry.register("dpmpp_3m_sde", sample_dpmpp_3m_sde)
registry.register("unipc", sample_unipc)
registry.register("deis", sample_deis)
registry.register("ipndm", sample_ipndm)
registry.register("adaptive", sample_adaptive)
registry.register("auto", sample_auto)

#: Samplers whose output depends on the generator beyond the starting noise.
STOCHASTIC = frozenset({"ddpm", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde",
                        "euler_anneal"})


def get(name: str) -> Sampler:
    """The sampler function registered under ``name``; unknown names list the valid ones."""
    return registry.get(name)


def names() -> list[str]:
    return registry.names()


def nfe_for_steps(name: str, steps: int, denoise_final: bool = True, **options: Any) -> int:
    """Denoiser evaluations a fixed-step sampler spends on ``steps`` steps.

    Every sampler but heun makes one evaluation per step (UniPC's corrector reuses the next
    step's evaluation); heun makes two, except on a last step into noise level 0."""
    name = _canonical(name)
    if name == "adaptive":
        raise ValueError("the adaptive sampler's NFE is only known after it runs")
    if name == "heun":
        return 2 * steps - 1 if denoise_final else 2 * steps
    return steps


def steps_for_nfe(name: str, nfe: int, denoise_final: bool = True, **options: Any) -> int:
    """The largest step count whose NFE does not exceed ``nfe`` (at least 1)."""
    name = _canonical(name)
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"NFE must be an integer >= 1, got {nfe!r}")
    if name == "heun":
        return max(1, (nfe + 1) // 2 if denoise_final else nfe // 2)
    return nfe


def _canonical(name: str) -> str:
    registry.get(name)
    return name.lower().replace("-", "_")


def sample(name: str, denoise: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...],
           schedule: Schedule, steps: int, seed: int | None = None,
           device: Any = "cpu", dtype: torch.dtype = torch.float32,
           noise_space=None, **options: Any) -> tuple[Tensor, dict]:
    """Draw starting noise from ``seed`` and run a sampler. Returns (x0, stats)."""
    fn = get(name)
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else seed)
    if noise_space is None:
        noise = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    else:
        template = torch.empty(shape, device=device, dtype=dtype)
        noise = noise_space.project(noise_space.sample_like(template, gen))
    stats: dict = {}
    x0 = fn(denoise, noise, schedule, steps, generator=gen, noise_space=noise_space,
            stats=stats, **options)
    return x0, stats


__all__ = ["get", "names", "sample", "noise_levels", "spacings", "registry", "STOCHASTIC",
           "nfe_for_steps", "steps_for_nfe"]
