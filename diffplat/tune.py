"""Fitting a step schedule to a model (``diffplat tune-steps``): the noise levels of a
deterministic fixed-step sampler at a given evaluation budget, fitted on the model's own
prior draws (``diffplat.samplers.tuning.fit_levels``) and stored beside its weights
(``diffplat.store.schedules``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from diffplat import samplers as samplers_mod
from diffplat.checks import positive_int
from diffplat.request import SamplingRequest
from diffplat.sampling import CHUNK_STRIDE, Counter, _network, as_draw


def tune_resolve(name: str, nfe: int, options: dict[str, Any], schedule=None
                 ) -> tuple[str, int, dict[str, Any]]:
    """(sampler, steps, options) for a sampler name or ``auto`` at ``nfe`` evaluations: the
    one resolver (``diffplat.request.SamplingRequest``) with ``nfe`` named as the flag."""
    return SamplingRequest(name, nfe=nfe, options=dict(options)).check(
        {"nfe": "--nfe"}).resolve(schedule)


def tune_steps(module, ckpt: str | Path, sampler: str, nfe: int,
                options: dict[str, Any] | None = None, batches: int = 2,
                batch_size: int = 256, seed: int = 0, reference_steps: int = 200,
                max_evals: int | None = None, prior: dict[str, Any] | None = None,
                log=print) -> dict[str, Any]:
    """Fit and store a step schedule for ``sampler`` at ``nfe`` evaluations; returns the
    stored entry."""
    from diffplat.samplers.tuning import fit_levels
    from diffplat.store.schedules import save_step_schedule

    name, steps, options = tune_resolve(sampler, nfe, dict(options or {}), module.schedule)
    if name in samplers_mod.STOCHASTIC or name == "adaptive":
        raise ValueError(f"tune-steps needs a deterministic fixed-step sampler; {name} is "
                         f"{'adaptive' if name == 'adaptive' else 'stochastic'}")
    positive_int(batches, "--batches")
    positive_int(batch_size, "--batch-size")
    device = module.device
    module.ema.shadow.eval()
    fit_batches = []
    for b in range(batches):
        gen = torch.Generator(device=device).manual_seed(seed * CHUNK_STRIDE + 50_000 + b)
        draw = as_draw(module.domain.prior(batch_size, gen, device, **(prior or {})))
        denoise = _network(module.ema_denoiser, draw.cond, draw.space, Counter())
        fit_batches.append((denoise, draw.noise, draw.space))
    t0 = time.perf_counter()
    with torch.no_grad():
        fit = fit_levels(samplers_mod.get(name), fit_batches, module.schedule, steps, options,
                         reference_steps=reference_steps, max_evals=max_evals, log=log)
    entry = {"sampler": name, "steps": steps, "nfe": samplers_mod.nfe_for_steps(name, steps,
                                                                             **options),
             "options": {k: v for k, v in options.items() if k != "levels"},
             "levels": fit["levels"], "objective": fit["objective"],
             "initial_objective": fit["initial"], "reference_steps": reference_steps,
             "evals": fit["evals"], "batches": batches, "batch_size": batch_size,
             "seed": seed, "prior": prior or {}, "seconds": round(time.perf_counter() - t0, 1),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    entry["path"] = str(save_step_schedule(ckpt, entry))
    return entry
