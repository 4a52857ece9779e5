"""One sampling request, checked once and resolved once.

What a user asks of a sampling call (a sampler or ``auto``, steps or an evaluation budget,
a spacing or the fitted schedule, sampler options, seed, chunking, guidance, inpainting)
travels as one ``SamplingRequest``. ``check`` validates it before any model is loaded or
any work is done, naming each field as the caller spelled it (``steps`` in Python,
``--steps`` on the command line); ``resolve`` turns it into the concrete (sampler, steps,
options) for a model. ``Pipeline.sample``, ``diffplat sample``/``evaluate`` and ``diffplat
tune-steps`` all go through these two methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffplat.checks import positive_int


def check_guidance(weight: float | None, name: str = "guidance") -> float | None:
    """A classifier-free guidance weight w, or ValueError before any work. The guided
    denoiser D_u + w (D_c - D_u) is the one of p(x) p(c|x)^w: w = 0 unconditional, 1 the
    conditional model, above 1 sharper; w < 0 raises the likelihood of *not* matching the
    condition (it samples away from it), and NaN or Inf makes every sample NaN."""
    if weight is None:
        return None
    w = float(weight)
    if w != w or w in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number, got {weight}: the guided "
                         "denoiser D_u + w (D_c - D_u) would make every sample NaN")
    if w < 0:
        raise ValueError(f"{name} must be >= 0, got {weight}: guidance samples p(x) p(c|x)^w "
                         "(0 = unconditional, 1 = conditional, > 1 sharper); a negative "
                         "weight samples away from the condition")
    return w


def sampler_name(sampler: str | None) -> str:
    """A sampler's registered name (``DPM-pp`` spellings folded), ``auto`` for None; an
    unknown name raises, listing the valid ones."""
    from diffplat import samplers as samplers_mod

    name = (sampler or "auto").lower().replace("-", "_")
    if name != "auto":
        samplers_mod.get(name)  # unknown names list the valid ones
    return name


@dataclass
class SamplingRequest:
    """A sampling call as the user gave it, before it meets a model.

    Args:
        sampler: a core sampler's name, or ``auto``/None (the configuration measured best
            for the evaluation budget, ``diffplat.samplers.auto``).
        steps, nfe: sampler steps, or the evaluation budget instead (at most one).
        spacing: a step spacing, or ``"fitted"`` (the levels ``diffplat tune-steps`` stored).
        options: sampler options (``{"eta": 0.5}``).
        seed: samples are reproducible for a seed and a fixed ``batch_size``.
        batch_size: samples per sampler call (None: all at once).
        guidance: classifier-free guidance weight.
        inpaint: ``(path, mask)`` to keep part of the data in ``path``.
        resample: network calls per evaluation when inpainting.
    """

    sampler: str | None = None
    steps: int | None = None
    nfe: int | None = None
    spacing: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int | None = None
    guidance: float | None = None
    inpaint: tuple[str | Path, str] | None = None
    resample: int = 1

    def check(self, names: Mapping[str, str] | None = None) -> SamplingRequest:
        """Validate every field that can be judged without a model; ValueError names the
        field as ``names`` spells it (``{"steps": "--steps"}``; default the field's name).
        Returns the request, its guidance weight as a float."""
        from diffplat.samplers.grids import spacings

        def name(key: str) -> str:
            return (names or {}).get(key, key)

        for key in ("steps", "nfe", "batch_size"):
            if getattr(self, key) is not None:
                positive_int(getattr(self, key), name(key))
        positive_int(self.resample, name("resample"))
        if self.steps is not None and self.nfe is not None:
            raise ValueError(f"give {name('steps')} or {name('nfe')}, not both")
        sampler_name(self.sampler)
        if self.spacing is not None and self.spacing.lower() != "fitted":
            spacings.get(self.spacing)
        self.guidance = check_guidance(self.guidance, name("guidance"))
        return self

    def resolve(self, schedule=None, default_sampler: str = "auto", default_steps: int = 18,
                fitted_source: str | Path | None = None) -> tuple[str, int, dict[str, Any]]:
        """The concrete (sampler, steps, options) the request means for a model.

        ``auto`` becomes the configuration measured best for the evaluation budget
        (``nfe``, else ``steps``, else what the model's ``default_sampler`` spends at
        ``default_steps``); ``nfe`` alone sets the steps of a named sampler; ``spacing=
        "fitted"`` takes the levels that ``diffplat tune-steps`` stored with
        ``fitted_source`` (a checkpoint or export). A model that declares its own sampling
        (a distilled student: ``diffplat.store.schedules.default_schedule``) gets it when
        the request leaves sampler, spacing and budget open or equal to it."""
        from diffplat import samplers as samplers_mod
        from diffplat.samplers.auto import choose
        from diffplat.samplers.tuning import GRID_OPTIONS

        self.check()
        steps, nfe, options = self.steps, self.nfe, dict(self.options or {})
        name = sampler_name(self.sampler)
        own = self._own_schedule(name, fitted_source)
        if own is not None:
            return own["sampler"], own["steps"], {**own.get("options", {}), **options,
                                                  "levels": own["levels"]}
        if name == "auto":
            if nfe is None:
                base = (default_sampler or "auto").lower()
                nfe = steps or (default_steps if base in ("adaptive", "auto") else
                                samplers_mod.nfe_for_steps(base, default_steps))
            name, table = choose(nfe, schedule)
            options = {**table, **{k: v for k, v in options.items() if v is not None}}
            steps = samplers_mod.steps_for_nfe(name, nfe, **options)
        elif steps is None:
            steps = samplers_mod.steps_for_nfe(name, nfe, **options) if nfe else default_steps
        spacing = self.spacing
        if spacing is not None and spacing.lower() == "fitted":
            from diffplat.store.schedules import fitted_schedule

            if fitted_source is None:
                raise ValueError("spacing 'fitted' needs the checkpoint or export the "
                                 "schedule was fitted for")
            entry = fitted_schedule(fitted_source, name, steps)
            options = {k: v for k, v in {**entry["options"], **options}.items()
                       if k not in GRID_OPTIONS}
            options["levels"] = entry["levels"]
        elif spacing is not None:
            options = {k: v for k, v in options.items() if k != "levels"}
            options["spacing"] = spacing
        return name, steps, options

    def _own_schedule(self, name: str, source: str | Path | None) -> dict[str, Any] | None:
        """The sampling a model declares as its own (a distilled student's K steps on its
        grid: ``diffplat.store.schedules.default_schedule``) when the request leaves it
        open: no sampler or that sampler, no spacing or levels, no other budget."""
        if source is None or self.spacing is not None or "levels" in (self.options or {}):
            return None
        from diffplat.store.schedules import default_schedule

        own = default_schedule(source)
        if own is None or name not in ("auto", own["sampler"]):
            return None
        if self.nfe not in (None, own.get("nfe", own["steps"])) or \
                self.steps not in (None, own["steps"]):
            return None
        return own


def resolve_sampler(sampler: str | None, steps: int | None = None, nfe: int | None = None,
                    spacing: str | None = None, options: dict[str, Any] | None = None, *,
                    schedule=None, default_sampler: str = "auto", default_steps: int = 18,
                    fitted_source: str | Path | None = None
                    ) -> tuple[str, int, dict[str, Any]]:
    """``SamplingRequest(sampler, steps, nfe, spacing, options).resolve(...)`` in one call:
    the concrete (sampler, steps, options) that a request means."""
    return SamplingRequest(sampler, steps, nfe, spacing, dict(options or {})).resolve(
        schedule, default_sampler, default_steps, fitted_source)
