"""One sampling pipeline for every domain and every caller.

``generate`` owns what turns a trained denoiser into a domain's samples: chunking, the
per-chunk seeds, evaluation mode of the weights, the guidance and inpainting wrappers, the
sampler call, ``decode`` and the join of the chunks. The Lightning module's validation,
``diffplat sample`` and ``evaluate``, conformer generation, ``compare`` and the benchmarks all
call it, so a sample drawn with the same seed and chunking is the same everywhere. NFE is
counted where the network is called (a guided step costs two calls, an inpainting step with
``resample = r`` costs r), not inferred from the wrappers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffplat import samplers as samplers_mod
from diffplat.checks import positive_int
from diffplat.domain import Domain, Draw
from diffplat.errors import NonFiniteError
from diffplat.guidance import ClassifierFreeGuidance, Inpainting
from diffplat.noise import NoiseSpace
from diffplat.request import (  # noqa: F401 - the resolver and the request lived here
    SamplingRequest,
    check_guidance,
    resolve_sampler,
)

#: The seed of chunk ``k`` of a call with ``seed``: seed * CHUNK_STRIDE + k.
CHUNK_STRIDE = 100_003


def _nonfinite(err: NonFiniteError, denoiser, sampler: str, steps: int,
               options: dict[str, Any], guidance: float | None) -> NonFiniteError:
    """The sampler's NaN report, naming the culprit: weights that hold NaN or Inf, else the
    sampling settings (the training's learning rate is no culprit of a finite model)."""
    where = str(err).split(";")[0]
    weights = getattr(denoiser, "state_dict", dict)()  # parameters and buffers
    bad = [n for n, p in weights.items() if torch.is_tensor(p) and p.is_floating_point()
           and not bool(torch.isfinite(p).all())]
    if bad:
        return NonFiniteError(f"{where}: the model's weights hold NaN or Inf ({len(bad)} "
                              f"tensors, e.g. {', '.join(bad[:2])}); this checkpoint cannot "
                              "sample, use an earlier one")
    settings = ", ".join([f"sampler {sampler}", f"{steps} steps"]
                         + [f"{k}={v}" for k, v in options.items() if k != "levels"]
                         + ([f"guidance {guidance:g}"] if guidance is not None else []))
    return NonFiniteError(f"{where} with finite weights: these sampling settings diverge "
                          f"({settings}); try another sampler, more steps"
                          + (" or a smaller guidance" if guidance else "")
                          + ", or check the model's own validation samples")


@dataclass
class Counter:
    """Counts the calls that reach the network."""

    calls: int = 0


@dataclass
class SamplingStats:
    """What a ``generate`` call did. ``nfe`` is the network calls of one chunk (every
    chunk makes the same number, the adaptive sampler aside); ``calls`` is the total."""

    sampler: str
    steps: int
    nfe: int = 0
    calls: int = 0
    chunks: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "steps": self.steps, "nfe": self.nfe,
                "calls": self.calls, "chunks": self.chunks}


def sampler_options(name: str) -> list[str]:
    """The names of the options a sampler takes, as it declares them (its own, the grid's
    and ``check_finite``: ``diffplat.samplers.options``)."""
    return sorted(o.name for o in samplers_mod.options(name))


def check_sampler_options(name: str, options: dict[str, Any]) -> None:
    """ValueError unless sampler ``name`` declares every option of ``options`` and allows
    its value: an unknown one lists the valid ones, a value of the wrong type or out of
    range names the option and the sampler (``diffplat.samplers.check_options``)."""
    samplers_mod.check_options(name, options)


def as_draw(result: Any) -> Draw:
    """A domain's ``prior`` result as a Draw (a plain (noise, cond, space) tuple too)."""
    if isinstance(result, Draw):
        return result
    noise, cond, space = result
    return Draw(noise, cond, space)


class SelfConditioning:
    """Self-conditioned sampling (Chen et al. 2022, "Analog Bits", sec. 3.2): every network
    call gets the previous call's x0_hat as ``x_self_cond`` (zeros at the first call).

    One instance lives for one chunk of one ``generate`` call, so the sampler and the
    denoiser stay stateless: ``input`` is what the network functions read, and ``wrap``
    records the estimate the sampler receives (the guided or inpainted one when those
    wrappers are on).
    """

    def __init__(self) -> None:
        self.previous: Tensor | None = None

    def input(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x) if self.previous is None else self.previous

    def wrap(self, denoise: Callable[[Tensor, Tensor], Tensor]):
        def record(x: Tensor, t: Tensor) -> Tensor:
            out = denoise(x, t)
            self.previous = out
            return out

        return record


def _network(denoiser, cond: dict[str, Any], space: NoiseSpace, counter: Counter,
             self_cond: SelfConditioning | None = None):
    def denoise(x: Tensor, t: Tensor) -> Tensor:
        counter.calls += 1
        if self_cond is not None:
            return denoiser.predict(x, t, noise_space=space, x_self_cond=self_cond.input(x),
                                    **cond)[1]
        return denoiser.predict(x, t, noise_space=space, **cond)[1]

    return denoise


def chunk_plan(num: int, batch_size: int | None) -> list[tuple[int, dict[str, Any]]]:
    """``num`` samples in chunks of ``batch_size`` (all at once when None)."""
    positive_int(num, "the number of samples")
    if batch_size is not None:
        positive_int(batch_size, "batch size")
    size = batch_size or num
    return [(min(size, num - start), {}) for start in range(0, num, size)]


def _start_options(start: tuple[Tensor, float], draw: Draw, schedule,
                   options: dict[str, Any]) -> dict[str, Any]:
    """The sampler options that begin the reverse process at ``start = (x, t)``: the start
    projected onto the draw's noise space and ``level_max``, the noise level of t, at most
    the level ordinary sampling starts from (``level_range``: 80 or the caller's
    ``level_max``), so that t = 1 keeps the ordinary grid."""
    from diffplat.samplers.grids import level_range

    x, t = start
    if not 0.0 < float(t) <= 1.0:
        raise ValueError(f"the start time must be in (0, 1], got {t}")
    if tuple(x.shape) != tuple(draw.noise.shape):
        raise ValueError(f"start state of shape {tuple(x.shape)} for noise of shape "
                         f"{tuple(draw.noise.shape)}")
    level = float(schedule.noise_level(torch.tensor(float(t), dtype=torch.float64)))
    level = min(level, level_range(schedule, None, options.get("level_max"))[1])
    return {"start": draw.space.project(x.to(draw.noise)), "level_max": level}


@torch.no_grad()
def generate(denoiser, domain: Domain, num: int | None = None, *, sampler: str,
             steps: int, seed: int = 0, batch_size: int | None = None,
             chunks: Sequence[tuple[int, dict[str, Any]]] | None = None,
             guidance: float | None = None,
             inpaint: tuple[str | Path, str] | None = None, resample: int = 1,
             sampler_options: dict[str, Any] | None = None,
             callback: Callable[[dict], Any] | None = None,
             device: Any = None, chunk_offset: int = 0,
             start: tuple[Tensor, float] | None = None,
             **prior_options: Any) -> tuple[Any, SamplingStats]:
    """Draw samples and decode them.

    Args:
        denoiser: a ``diffplat.targets.Denoiser`` (``predict(x_t, t, noise_space, **cond)``),
            usually a model's EMA denoiser; it is put in eval mode for the call.
        domain: the domain whose ``prior`` draws the noise and whose ``decode`` reads x0.
        num, batch_size: how many samples, and how many per sampler call (default all).
        chunks: instead of ``num``/``batch_size``: (size, extra prior options) per chunk,
            e.g. conformers packed by atom count.
        sampler, steps, sampler_options: the core sampler (``diffplat.samplers``).
        seed: chunk k draws with a generator seeded by ``seed * CHUNK_STRIDE + k``, so the
            samples for a seed are reproducible for a fixed chunking.
        guidance: classifier-free guidance weight (the domain's ``null_condition``).
        inpaint: ``(path, mask)``: keep what the domain's ``inpaint_source`` reads from
            ``path`` and generate the rest, with ``resample`` network calls per evaluation.
        callback: called after every sampler step with the step's dict.
        device: where to sample (default: the denoiser's parameters').
        chunk_offset: number the chunks from here (a caller that splits one logical call
            into several, to report progress between them, keeps the seeds of one call).
        start: ``(x, t)``: refine instead of generate (SDEdit, Meng et al. 2022): the reverse
            process starts from the clean state ``x`` (shaped like the draw's noise, one
            chunk only; projected onto the noise space) noised to schedule time t in (0, 1],
            and ``steps`` span that level (at most ordinary sampling's first level) down to
            0. t = 1 is then ordinary sampling up to the start's share x / level of the
            first state (1/80 of it on the default grids).
        prior_options: passed to ``domain.prior`` (``num_atoms``, ``label``, ...).

    Returns:
        (the domain's decoded samples, joined over chunks; SamplingStats).
    """
    fn = samplers_mod.get(sampler)
    positive_int(steps, "steps")
    positive_int(resample, "resample")
    guidance = check_guidance(guidance)
    if chunks is None:
        chunks = domain.sample_chunks(num or 0, batch_size, prior_options)
    plan = list(chunks) if chunks is not None else chunk_plan(num or 0, batch_size)
    if start is not None and len(plan) != 1:
        raise ValueError(f"a start state is one batch: give one chunk, not {len(plan)}")
    max_t = float(getattr(denoiser, "max_t", 1.0))
    if max_t < 1.0 and (start is None or float(start[1]) > max_t + 1e-9):
        raise ValueError(
            f"this model was trained on schedule times t <= {max_t} only (t_options high): "
            "it refines a given start and cannot "
            + (f"sample from pure noise; give a start (x, t) with t <= {max_t:g}"
               if start is None else f"start at t = {float(start[1])}; use t <= {max_t}"))
    if device is None:
        param = next(denoiser.parameters(), None)
        device = param.device if param is not None else "cpu"
    stats = SamplingStats(sampler, steps, options=dict(sampler_options or {}))
    schedule = denoiser.schedule
    was_training = denoiser.training
    denoiser.eval()
    parts = []
    try:
        for k, (size, extra) in enumerate(plan):
            gen = torch.Generator(device=device).manual_seed(
                seed * CHUNK_STRIDE + chunk_offset + k)
            draw = as_draw(domain.prior(size, gen, device, **{**prior_options, **extra}))
            counter = Counter()
            # a fresh previous estimate per chunk (None: the denoiser is not self-conditioned)
            self_cond = SelfConditioning() if getattr(denoiser, "self_condition", False) \
                else None
            denoise = _network(denoiser, draw.cond, draw.space, counter, self_cond)
            if guidance is not None:
                null = domain.null_condition(draw.cond)
                denoise = ClassifierFreeGuidance(
                    denoise, _network(denoiser, null, draw.space, counter, self_cond),
                    guidance)
            if inpaint is not None:
                known, mask = domain.inpaint_source(Path(inpaint[0]), inpaint[1], draw.noise,
                                                    draw.cond)
                # decode learns what was kept (a preview marks it)
                draw.meta = {**draw.meta, "kept": mask.expand_as(draw.noise).bool().cpu()}
                denoise = Inpainting(denoise, known.to(draw.noise), mask.to(draw.noise),
                                     schedule, noise_space=draw.space, generator=gen,
                                     resample=resample)
            if self_cond is not None:
                denoise = self_cond.wrap(denoise)
            options = stats.options if start is None else \
                {**stats.options, **_start_options(start, draw, schedule, stats.options)}
            try:
                x0 = fn(denoise, draw.noise, schedule, steps, generator=gen,
                        noise_space=draw.space, callback=callback, **options)
            except NonFiniteError as err:
                raise _nonfinite(err, denoiser, sampler, steps, stats.options,
                                 guidance) from None
            if inpaint is not None:
                # the kept part is the data itself, also for samplers that stop at the
                # smallest level without a final denoise (denoise_final=False)
                m = mask.to(x0)
                x0 = m * known.to(x0) + (1 - m) * x0
            stats.nfe = counter.calls
            stats.calls += counter.calls
            stats.chunks += 1
            parts.append(domain.decode(x0.float(), draw.cond, draw.meta))
    finally:
        denoiser.train(was_training)
    return domain.concat(parts), stats
