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
import platform
import time
from pathlib import Path
from typing import Any

CARD_JSON, CARD_MD = "card.json", "MODEL_CARD.md"


class Pipeline:
    """A trained model ready to sample.

    Attributes:
        module: the ``DiffusionModule`` (EMA weights in ``module.ema_denoiser``).
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
        max_t = getattr(self.module.ema_denoiser, "max_t", 1.0)
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
        from diffplat.training.checkpoint import export

        out = Path(out_dir)
        paths = export(self.module, out)
        info = model_card(self.module, {**self.card, **card,
                                        **({"metrics": metrics} if metrics else {})})
        (out / CARD_JSON).write_text(json.dumps(info, indent=2, default=str))
        (out / CARD_MD).write_text(card_markdown(info))
        return [*paths, out / CARD_JSON, out / CARD_MD]


def model_card(module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is known about how a model was made, from its stored run configuration and
    training record, updated with ``extra``."""
    hp = dict(module.hparams)
    run = module.run_config or {}
    record = getattr(module, "train_record", None) or {}
    domain = hp.get("domain") if isinstance(hp.get("domain"), dict) else {}
    card: dict[str, Any] = {
        "domain": module.domain.name,
        "data": (domain.get("init_args") or {}).get("data_path"),
        "schedule": hp.get("schedule"), "target": hp.get("target"),
        "backbone": (hp.get("backbone") or {}).get("class_path")
        if isinstance(hp.get("backbone"), dict) else None,
        "parameters": sum(p.numel() for p in module.backbone.parameters()),
        "sampler": hp.get("sampler"), "sample_steps": hp.get("sample_steps"),
        "steps": record.get("steps"), "train_seconds": record.get("seconds"),
        "device": record.get("device"),
        "command": record.get("command") or (f"diffplat fit -c {run['config'][0]}"
                                             if run.get("config") else None),
        "created": time.strftime("%Y-%m-%d"),
    }
    card.update(extra or {})
    return card


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# {card.get('name') or card['domain']} model", ""]
    for key in ("description", "domain", "data", "data_license", "config", "command",
                "steps", "train_seconds", "device", "backbone", "parameters", "schedule",
                "target", "sampler", "sample_steps", "created"):
        if card.get(key) not in (None, ""):
            lines.append(f"- **{key.replace('_', ' ')}**: {card[key]}")
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---:|"]
        for k, v in metrics.items():
            lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
        if card.get("metrics_command"):
            lines += ["", f"Measured with `{card['metrics_command']}`."]
        if card.get("measured_with"):
            lines += ["", "Sampling: " + ", ".join(f"{k} {v}" for k, v in
                                                  card["measured_with"].items()) + "."]
    if card.get("notes"):
        lines += ["", "## Notes", "", str(card["notes"])]
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: Any) -> str:
    """A readable name of the machine part a model trained on."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()} ({torch.get_num_threads()} threads)"


def load(source: str | Path, device: Any = "cpu") -> Pipeline:
    """A Pipeline from a checkpoint, an export folder or a shipped model's name."""
    from diffplat.training.checkpoint import load_module

    path = Path(source)
    if not path.exists():
        from diffplat.models import find_model

        path = find_model(str(source))
    card = None
    if path.is_dir() and (path / CARD_JSON).is_file():
        card = json.loads((path / CARD_JSON).read_text())
    module = load_module(path, map_location=device).to(device)
    return Pipeline(module, path, card)
