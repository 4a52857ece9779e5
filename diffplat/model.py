"""DiffusionModel: a diffusion model as a plain ``torch.nn.Module``, no training framework.

It holds what sampling needs and nothing of training: the domain plug-in (prior, decode,
metrics), the backbone, the schedule, the prediction target and ``sigma_data`` (inside the
two denoisers), the schedule times it was trained on (``max_t``: below 1 a refiner),
self-conditioning, and the EMA weights. ``denoiser`` wraps the trained weights and
``ema_denoiser`` their EMA; ``generate`` samples with the latter (as EDM's ``generate.py``
needs only the network). ``diffplat.store`` builds one from a checkpoint or an export;
``diffplat.training.module.DiffusionModule`` (Lightning) wraps one for training.

State dict: ``backbone.*``, ``ema.shadow.*``, ``ema.num_updates``, the keys a Lightning
checkpoint has always held for the model. The denoisers are ordinary submodules that wrap
``backbone`` and ``ema.shadow``; their entries are the same tensors again, so they are left
out of the state dict and filled from those two when one is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffplat import schedules as schedules_mod
from diffplat.domain import Domain
from diffplat.ema import EMA
from diffplat.targets import Denoiser

#: submodule -> the registered module whose weights it wraps (same tensors)
ALIASES = {"denoiser.backbone.": "backbone.", "ema_denoiser.backbone.": "ema.shadow."}


class Hyperparameters(dict):
    """The model's stored configuration (the constructor arguments of a training run) with
    attribute access, as Lightning's ``hparams``: ``model.hparams.sampler``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def _drop_aliases(module: nn.Module, state: dict[str, Any], prefix: str, metadata) -> None:
    """state_dict post-hook: the denoisers' entries repeat ``backbone``'s and the EMA's."""
    starts = tuple(prefix + alias for alias in ALIASES)
    for key in [k for k in state if k.startswith(starts)]:
        del state[key]
    meta = getattr(state, "_metadata", None)
    if meta is not None:
        names = tuple(prefix + a.split(".")[0] for a in ALIASES)
        for key in [k for k in meta if k.startswith(names)]:
            del meta[key]


def _fill_aliases(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: the denoisers' entries from ``backbone`` and the EMA's."""
    for alias, source in ALIASES.items():
        head = prefix + source
        for key in [k for k in state if k.startswith(head)]:
            state.setdefault(prefix + alias + key[len(head):], state[key])


class DiffusionModel(nn.Module):
    """A diffusion model: the domain's data and noise, a backbone, its denoisers and EMA.

    Args:
        domain: the Domain plug-in (prior, decode, metrics, writer, preview).
        backbone: network called as ``backbone(c_in * x_t, c_noise, **cond)``.
        schedule, schedule_options: the noise schedule (``diffplat.schedules``).
        target: the prediction target (eps, x0, v, edm, flow).
        sigma_data: data standard deviation (preconditioning, the edm target).
        max_t: the largest schedule time trained on (``t_options: {high: ...}``); below 1
            the model refines a given start and cannot sample from pure noise.
        self_condition: the backbone takes the previous estimate as ``x_self_cond``.
        ema_decay: decay of the weight EMA (``diffplat.ema.EMA``).
        hparams: the stored configuration (default: these arguments); ``sampler`` and
            ``sample_steps`` in it are the model's default sampling.
        run_config, train_record: the run's configuration and how the weights were made
            (steps, seconds, device, command), as checkpoints and exports store them.
    """

    def __init__(self, domain: Domain, backbone: nn.Module, schedule: str = "cosine",
                 schedule_options: dict[str, Any] | None = None, target: str = "eps",
                 sigma_data: float = 1.0, max_t: float = 1.0, self_condition: bool = False,
                 ema_decay: float = 0.999, hparams: dict[str, Any] | None = None,
                 run_config: dict[str, Any] | None = None,
                 train_record: dict[str, Any] | None = None):
        super().__init__()
        supports = bool(getattr(backbone, "supports_self_condition", False))
        if self_condition != supports:
            raise ValueError(
                f"self_condition={self_condition} but the backbone {type(backbone).__name__} "
                f"{'takes' if supports else 'does not take'} x_self_cond: set both "
                "model.self_condition and the backbone's self_condition (a backbone with "
                "supports_self_condition), or neither")
        self.domain = domain
        self.backbone = backbone
        self.schedule = schedules_mod.get(schedule, **(schedule_options or {}))
        self.ema = EMA(backbone, ema_decay)
        self.denoiser = Denoiser(backbone, self.schedule, target, sigma_data=sigma_data,
                                 self_condition=self_condition, max_t=max_t)
        self.ema_denoiser = Denoiser(self.ema.shadow, self.schedule, target,
                                     sigma_data=sigma_data, self_condition=self_condition,
                                     max_t=max_t)
        if hparams is None:
            hparams = {"schedule": schedule, "schedule_options": schedule_options,
                       "target": target, "sigma_data": sigma_data, "ema_decay": ema_decay,
                       "self_condition": self_condition, "sampler": "heun",
                       "sample_steps": 18}
        #: the stored configuration (Lightning's hparams when training wraps this model)
        self.hparams = hparams if hasattr(hparams, "sampler") else Hyperparameters(hparams)
        self.run_config = run_config
        self.train_record: dict[str, Any] = dict(train_record or {})
        self.register_state_dict_post_hook(_drop_aliases)
        self.register_load_state_dict_pre_hook(_fill_aliases)

    @property
    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @torch.no_grad()
    def generate(self, num: int, sampler: str | None = None, steps: int | None = None,
                 seed: int = 0, batch_size: int | None = None,
                 callback: Callable[[dict], Any] | None = None,
                 sampler_options: dict[str, Any] | None = None,
                 guidance: float | None = None,
                 inpaint: tuple[str | Path, str] | None = None, resample: int = 1,
                 **prior_options: Any) -> tuple[Any, dict[str, Any]]:
        """Draw ``num`` samples with the EMA weights through ``diffplat.sampling.generate``
        (reproducible for a fixed seed and batch size). Returns (samples as the domain
        decodes them, stats: sampler, steps, nfe per chunk, calls in all).

        ``guidance = w`` applies classifier-free guidance with the domain's null condition;
        ``inpaint = (path, mask)`` fixes the part of each sample that the domain reads from
        ``path`` (``Domain.inpaint_source``) and generates the rest, with ``resample``
        denoiser calls per evaluation (``guidance.Inpainting``)."""
        from diffplat.sampling import generate

        samples, stats = generate(
            self.ema_denoiser, self.domain, num, sampler=sampler or self.hparams.sampler,
            steps=self.hparams.sample_steps if steps is None else steps, seed=seed,
            batch_size=batch_size, guidance=guidance, inpaint=inpaint, resample=resample,
            sampler_options=sampler_options, callback=callback, device=self.device,
            **prior_options)
        return samples, stats.as_dict()
