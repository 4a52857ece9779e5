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
               **domain_options: Any) -> Any:
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
            domain_options: the domain's own sampling options, as it declares them
                (``Domain.sampling_options``; ``num_atoms=19``, ``label="seven"``;
                conformers of given molecules: ``smiles=["CCO", "CO"], copies=5``, refined
                from RDKit ETKDG with ``refine_from="etkdg", noise_level=0.4``): checked
                against the declaration (an unknown name or a bad value raises a ValueError
                naming it), then handed to ``Domain.sample``.

        ``last_stats`` holds the sampling record (sampler, steps, evaluations, and what the
        domain adds: a conformer refinement's ETKDG seconds).
        """
        from diffplat.domain_options import check_options
        from diffplat.request import SamplingRequest

        request = SamplingRequest(sampler, steps, nfe, spacing, dict(options or {}), seed,
                                  batch_size, guidance, inpaint, resample).check()
        given = check_options(self.domain.sampling_options, domain_options,
                              f"{self.source}: the {self.domain.name!r} domain")

        def draw(**prior: Any) -> tuple[Any, dict[str, Any]]:
            return self._generate(num, request, progress, prior)

        samples, self.last_stats = self.domain.sample(self.module, num, request, given,
                                                      draw, self.card)
        return samples

    def _generate(self, num, request, progress, prior):
        """The core's ordinary sampling: the request resolved for this model, then
        ``diffplat.sampling.generate``."""
        from diffplat.sampling import check_sampler_options, chunk_plan, generate

        hp = self.module.hparams
        name, steps, options = request.resolve(
            self.module.schedule, default_sampler=hp.sampler, default_steps=hp.sample_steps,
            fitted_source=self.source)
        check_sampler_options(name, options)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps * len(chunk_plan(num, request.batch_size)),
                       desc=f"sampling ({name}, {steps} steps)", unit="step")
        try:
            samples, stats = generate(
                self.module.ema_denoiser, self.domain, num, sampler=name, steps=steps,
                seed=request.seed, batch_size=request.batch_size, guidance=request.guidance,
                inpaint=request.inpaint, resample=request.resample, sampler_options=options,
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
