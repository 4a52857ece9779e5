"""Samplers: pure functions with one signature and a registry.

    sampler(denoise, noise, schedule, steps, **options) -> x0

``denoise(x_t, t)`` returns x0_hat with t of shape [B]; ``noise`` is standard normal with the
data's shape. Common options: ``spacing`` and ``rho`` (see diffplat.samplers.grids),
``generator`` (torch.Generator for the noise of stochastic samplers), ``noise_space``,
``callback`` (called after every step with a dict), ``stats`` (a dict that receives "nfe"),
``check_finite``. Samplers keep no state between calls.

Each sampler is registered with the options it takes, typed (``diffplat.samplers.options``):
``options(name)`` lists them, ``check_options(name, options)`` validates a call's options
against them, ``describe(name)`` prints them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from diffplat.checks import positive_int
from diffplat.registry import Registry
from diffplat.samplers import adams, adaptive, dpm, karras, unipc
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
from diffplat.samplers.options import COMMON, SamplerOption, not_set
from diffplat.samplers.options import check as check_declared
from diffplat.samplers.unipc import sample_unipc
from diffplat.schedules import Schedule

Sampler = Callable[..., Tensor]


def sample_auto(denoise: Callable[[Tensor, Tensor], Tensor], noise: Tensor,
                schedule: Schedule, steps: int, **kw: Any) -> Tensor:
    """``auto``: the configuration of ``samplers.auto.choose(steps, schedule)`` (every entry
    makes one evaluation per step, so steps = NFE); explicit options win over the table's
    (None, an option not set, leaves the table's)."""
    name, options = choose(steps, schedule)
    return get(name)(denoise, noise, schedule, steps, **{**options, **not_set(kw)})


registry: Registry[Sampler] = Registry("sampler")
#: registered name -> the options the sampler takes: its own, then COMMON (the grid's)
declared: dict[str, tuple[SamplerOption, ...]] = {}
#: registered name -> the sampler whose grid defaults it takes (grids.SAMPLER_DEFAULTS)
_grid_defaults: dict[str, str] = {}


def register(name: str, fn: Sampler, own: Iterable[SamplerOption] = (),
             grid_defaults: str | None = None) -> Sampler:
    """Register sampler ``fn`` under ``name`` with the options it takes beyond the grid's
    and ``check_finite`` (``own``: ``diffplat.samplers.options.SamplerOption``);
    ``grid_defaults``: the sampler whose per-schedule grid defaults it uses (itself)."""
    registry.register(name, fn)
    declared[name.lower()] = (*own, *COMMON)
    _grid_defaults[name.lower()] = grid_defaults or name.lower()
    return fn


register("ddpm", sample_ddpm, karras.OPTIONS["ddpm"])
register("ddim", sample_ddim, karras.OPTIONS["ddim"])
register("euler", sample_euler, karras.OPTIONS["euler"])
register("euler_ancestral", sample_euler_ancestral, karras.OPTIONS["euler_ancestral"])
register("heun", sample_heun, karras.OPTIONS["heun"])
register("euler_anneal", sample_euler_anneal, karras.OPTIONS["euler_anneal"], "euler")
register("dpmpp_2m", sample_dpmpp_2m, dpm.OPTIONS["dpmpp_2m"])
register("dpmpp_2m_sde", sample_dpmpp_2m_sde, dpm.OPTIONS["dpmpp_2m_sde"])
register("dpmpp_3m", sample_dpmpp_3m, dpm.OPTIONS["dpmpp_3m"])
register("dpmpp_3m_sde", sample_dpmpp_3m_sde, dpm.OPTIONS["dpmpp_3m_sde"])
register("unipc", sample_unipc, unipc.OPTIONS)
register("deis", sample_deis, adams.OPTIONS["deis"])
register("ipndm", sample_ipndm, adams.OPTIONS["ipndm"])
register("adaptive", sample_adaptive, adaptive.OPTIONS)
register("auto", sample_auto)  # the grid's options; the table picks the rest

#: Samplers whose output depends on the generator beyond the starting noise.
STOCHASTIC = frozenset({"ddpm", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde",
                        "euler_anneal"})


def get(name: str) -> Sampler:
    """The sampler function registered under ``name``; unknown names list the valid ones."""
    return registry.get(name)


def names() -> list[str]:
    return registry.names()


def options(name: str, common: bool = True) -> tuple[SamplerOption, ...]:
    """The options sampler ``name`` takes, as declared: its own, then (with ``common``)
    the grid's and ``check_finite``; unknown names list the valid ones."""
    own = declared[_canonical(name)]
    return own if common else tuple(o for o in own if o not in COMMON)


def check_options(name: str, given: Mapping[str, Any]) -> None:
    """ValueError unless sampler ``name`` declares every option of ``given`` and allows its
    value: an unknown one lists the valid ones, a refused value names the option."""
    check_declared(_canonical(name), options(name), given)


def describe(name: str) -> str:
    """Sampler ``name``'s options, one line each: allowed values, default, help."""
    grid = _grid_defaults[_canonical(name)]
    return "\n".join(o.describe(grid) for o in options(name))


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
    positive_int(nfe, "NFE")
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
           "nfe_for_steps", "steps_for_nfe", "register", "options", "check_options",
           "describe", "SamplerOption"]
