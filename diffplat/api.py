"""The Python API: load a trained model and sample from it in three lines.

.. code-block:: python

    import diffplat

    model = diffplat.load("runs/qm9-tiny/checkpoints/last.ckpt")   # or an export folder
    molecules = model.sample(100, steps=50, seed=0)
    model.write(molecules, "samples/")                            # SDF + XYZ + preview.png

``load`` takes a Lightning checkpoint, a folder written by ``diffplat export`` (or by
``Pipeline.save``), or the name of a model shipped with diffplat (``diffplat.models``). A
pipeline needs no training data: checkpoints and exports carry what sampling needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffplat.store.cards import (  # noqa: F401 - model_card, cpu_name, ... were here
    CARD_JSON,
    CARD_MD,
    card_markdown,
    cpu_name,
    device_name,
    model_card,
)


class Pipeline:
    """A trained model ready to sample.

    Attributes:
        module: the ``diffplat.model.DiffusionModel`` (EMA weights in
            ``module.ema_denoiser``).
        domain: its domain plug-in (what ``sample`` returns, ``write`` and ``metrics``).
        source: where it was loaded from.
        card: the model card, when the source has one (``card.json``).
    """

    def __init__(self, module, source: str | Path, card: dict[str, Any] | None = None):
        self.module = module
        self.source = str(source)
        self.card = card or {}

    @property
    def domain(self):
        return self.module.domain

    @property
    def device(self):
        return self.module.device

    def to(self, device: Any) -> Pipeline:
        self.module.to(device)
        return self

    def __repr__(self) -> str:
        hp = self.module.hparams
        return (f"Pipeline({self.domain.name}, schedule={hp.schedule}, target={hp.target}, "
                f"source={self.source!r})")

    def sample(self, num: int, *, sampler: str | None = None, steps: int | None = None,
               nfe: int | None = None, spacing: str | None = None, seed: int = 0,
               batch_size: int | None = None, guidance: float | None = None,
               inpaint: tuple[str | Path, str] | None = None, resample: int = 1,
               options: dict[str, Any] | None = None, progress: bool = False,
               refine_from: str | None = None, noise_level: float | None = None,
               mmff: bool = False, **prior: Any) -> Any:
        """``num`` samples, decoded by the domain (molecules, clips, clouds, points).

        Args:
            sampler, steps: a core sampler and its step count (default: the model's own);
                ``"auto"`` is the configuration measured best for the evaluation budget.
            nfe: the evaluation budget instead of ``steps``.
            spacing: a step spacing, or ``"fitted"`` for the levels ``diffplat tune-steps``
                stored with the model.
            seed: reproducible for a fixed ``batch_size``.
            guidance: classifier-free guidance weight for a conditional model.
            inpaint: ``(path, mask)``: keep what ``mask`` names of the data in ``path``.
            resample: network calls per evaluation when inpainting.
            options: sampler options (``{"eta": 0.5}``).
            progress: show a progress bar.
            prior: what to sample, for the domain (``num_atoms=19``, ``label="seven"``;
                conformers of given molecules: ``smiles=["CCO", "CO"], copies=5``).
            refine_from, noise_level, mmff: conformers only: ``refine_from="etkdg"`` refines
                RDKit ETKDG conformers (``mmff``: relaxed with MMFF94 first) noised to
                schedule time ``noise_level`` instead of generating from noise (SDEdit, Meng
                et al. 2022), as ``diffplat conformers --refine-from etkdg`` does; a
                shipped refiner's card supplies its ``noise_level``. ``last_stats`` holds
                ETKDG's own seconds.
        """
        from diffplat.sampling import check_sampler_options, resolve_sampler

        hp = self.module.hparams
        max_t = self.module.ema_denoiser.max_t
        if refine_from is not None or noise_level is not None or mmff:
            return self._refine(num, refine_from, noise_level, mmff, sampler, steps, nfe,
                                seed, options, prior)
        if max_t < 1.0:
            raise ValueError(
                f"{self.source} is a refiner (trained on t <= {max_t:g} only): give "
                f"refine_from='etkdg' and noise_level <= {max_t:g}"
                + (f" (its card: {self._card_refine()['t']})" if self._card_refine() else ""))
        name, steps, options = resolve_sampler(
            sampler, steps, nfe, spacing, options, schedule=self.module.schedule,
            default_sampler=hp.sampler, default_steps=hp.sample_steps,
            fitted_source=self.source)
        check_sampler_options(name, options)
        samples, self.last_stats = self._generate(num, name, steps, seed, batch_size,
                                                  guidance, inpaint, resample, options,
                                                  progress, prior)
        return samples

    def _card_refine(self) -> dict[str, Any] | None:
        refine = (self.card.get("measured_with") or {}).get("refine")
        return refine if isinstance(refine, dict) and "t" in refine else None

    def _refine(self, num, refine_from, noise_level, mmff, sampler, steps, nfe, seed,
                options, prior):
        """Samples refined from a classical method's (``sample(..., refine_from=...)``);
        the domain makes the starts (``Domain.refine``)."""
        card = self._card_refine()
        if refine_from is None:
            raise ValueError("noise_level and mmff belong to refinement: give refine_from "
                             "too (refine_from='etkdg' for conformers)")
        if noise_level is None:
            if card is None:
                raise ValueError(f"refine_from={refine_from!r} needs noise_level (schedule "
                                 "time in (0, 1] of the start); this model's card names none")
            noise_level = float(card["t"])
            mmff = mmff or bool(card.get("mmff"))
        if not 0.0 < float(noise_level) <= 1.0:
            raise ValueError(f"noise_level must be in (0, 1], got {noise_level}")
        if nfe is not None or options:
            raise ValueError("refinement takes sampler and steps (not nfe or options)")
        try:
            samples, self.last_stats = self.domain.refine(
                self.module, num, start=refine_from, noise_level=float(noise_level),
                mmff=mmff, sampler=sampler or self.module.hparams.sampler,
                steps=steps or self.module.hparams.sample_steps, seed=seed, prior=prior)
        except NotImplementedError as err:
            raise ValueError(f"{self.source}: {err}") from None
        return samples

    def _generate(self, num, name, steps, seed, batch_size, guidance, inpaint, resample,
                  options, progress, prior):
        from diffplat.sampling import chunk_plan, generate

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps * len(chunk_plan(num, batch_size)),
                       desc=f"sampling ({name}, {steps} steps)", unit="step")
        try:
            samples, stats = generate(
                self.module.ema_denoiser, self.domain, num, sampler=name, steps=steps,
                seed=seed, batch_size=batch_size, guidance=guidance, inpaint=inpaint,
                resample=resample, sampler_options=options,
                callback=(lambda info: bar.update(1)) if bar else None,
                device=self.module.device, **prior)
        finally:
            if bar:
                bar.close()
        return samples, stats.as_dict()

    def metrics(self, samples: Any, split: str = "test") -> dict[str, float]:
        """The domain's metrics of ``samples`` (those that need reference data need it)."""
        return self.domain.metrics(samples, split)

    def write(self, samples: Any, out_dir: str | Path) -> list[Path]:
        """The samples in the domain's file formats, plus ``preview.png``."""
        out = Path(out_dir)
        paths = self.domain.write(samples, out)
        paths.append(self.domain.preview(samples, out / "preview.png"))
        return paths

    def save(self, out_dir: str | Path, metrics: dict[str, Any] | None = None,
             **card: Any) -> list[Path]:
        """An export folder (safetensors weights, configuration, the domain's sampling
        state) with a model card (``card.json`` and ``MODEL_CARD.md``: data, training
        command, steps, wall time, device, metrics). ``metrics`` and ``card`` entries add
        to or replace what the checkpoint knows."""
        from diffplat.store import export

        out = Path(out_dir)
        paths = export(self.module, out)
        info = model_card(self.module, {**self.card, **card,
                                        **({"metrics": metrics} if metrics else {})})
        (out / CARD_JSON).write_text(json.dumps(info, indent=2, default=str))
        (out / CARD_MD).write_text(card_markdown(info))
        return [*paths, out / CARD_JSON, out / CARD_MD]


def load(source: str | Path, device: Any = "cpu") -> Pipeline:
    """A Pipeline from a checkpoint, an export folder or a shipped model's name."""
    from diffplat.store import load_model

    path = Path(source)
    if not path.exists():
        from diffplat.models import find_model

        path = find_model(str(source))
    card = None
    if path.is_dir() and (path / CARD_JSON).is_file():
        card = json.loads((path / CARD_JSON).read_text())
    module = load_model(path, map_location=device).to(device)
    return Pipeline(module, path, card)
