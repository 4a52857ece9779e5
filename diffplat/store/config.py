"""A model's stored configuration -> a DiffusionModel, under the trust rule.

Checkpoints and exports store the configuration a run was trained with: the constructor
arguments of ``diffplat.training.module.DiffusionModule`` (the domain and the backbone as
``class_path``/``init_args``). ``model_arguments`` declares the same arguments without
Lightning (a test keeps the two signatures equal), so the store parses a stored
configuration exactly as training did, fills the same defaults and makes the same checks.
"""

from __future__ import annotations

from typing import Any

from diffplat.backbone import Backbone
from diffplat.domain import Domain
from diffplat.trust import check_class_paths, enforced


def module_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """The constructor configuration from stored hyperparameters (private keys dropped)."""
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def model_arguments(domain: Domain, backbone: Backbone, schedule: str = "cosine",
                    schedule_options: dict[str, Any] | None = None, target: str = "eps",
                    sigma_data: float = 1.0, weighting: str = "uniform",
                    weighting_options: dict[str, Any] | None = None,
                    t_sampler: str = "uniform", t_options: dict[str, Any] | None = None,
                    lr: float = 1e-3, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.999), warmup_steps: int = 100,
                    decay_steps: int | None = None, min_lr_ratio: float = 0.1,
                    clip: str = "norm", clip_value: float = 1.0, ema_decay: float = 0.999,
                    batch_size: int = 256, val_batch_size: int | None = None,
                    num_workers: int = 0, seed: int = 0, sampler: str = "heun",
                    sample_steps: int = 18, sample_num: int = 1000,
                    sample_every_n_epochs: int = 1, log_snr_buckets: int = 8,
                    on_nonfinite: str = "stop", max_skipped_fraction: float = 0.1,
                    compile: bool = False, self_condition: bool = False,
                    coupling: str = "independent") -> dict[str, Any]:
    """The arguments of a diffusion model run (documented on DiffusionModule), checked
    (``check_arguments``) and returned as a dict in signature order."""
    args = dict(locals())
    check_arguments(**args)
    return args


def check_arguments(*, schedule: str, coupling: str, clip: str, on_nonfinite: str,
                    max_skipped_fraction: float, sampler: str, **_: Any) -> None:
    """The checks DiffusionModule makes of its arguments before it builds anything."""
    from diffplat import samplers

    if coupling != "independent" and schedule != "flow":
        raise ValueError(f"coupling={coupling!r} is for the flow schedule, got "
                         f"schedule={schedule!r}")
    if clip not in ("none", "norm", "adaptive"):
        raise ValueError(f"clip must be one of none, norm, adaptive; got {clip!r}")
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    if not 0.0 <= max_skipped_fraction <= 1.0:
        raise ValueError("max_skipped_fraction must be in [0, 1], got "
                         f"{max_skipped_fraction!r}")
    samplers.get(sampler)  # unknown names fail at construction, listing the valid ones


def model_from_arguments(args: dict[str, Any], hparams: dict[str, Any] | None = None):
    """A DiffusionModel from ``model_arguments``' dict (domain and backbone as objects):
    the training time range from the loss's ``t_sampler``/``t_options``, as training has
    it."""
    from diffplat.losses import DiffusionLoss
    from diffplat.model import DiffusionModel

    loss = DiffusionLoss(args["weighting"], args["t_sampler"], args["weighting_options"],
                         args["t_options"], self_condition=args["self_condition"],
                         coupling=args["coupling"])
    return DiffusionModel(args["domain"], args["backbone"], args["schedule"],
                          args["schedule_options"], args["target"], args["sigma_data"],
                          max_t=loss.time_range[1], self_condition=args["self_condition"],
                          ema_decay=args["ema_decay"], hparams=hparams)


def parse_arguments(config: dict[str, Any], trusted_prefixes: tuple[str, ...] | None = None,
                    source: str = "a model configuration") -> dict[str, Any]:
    """``model_arguments`` of a stored configuration with its classes instantiated, under
    the trust rule (diffplat.trust): every class path is checked before anything is
    imported, and again at the import itself; ``source`` names the file in a refusal."""
    from jsonargparse import ArgumentParser

    config = module_config(config)
    check_class_paths(config, trusted_prefixes, source)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(model_arguments, "model", fail_untyped=False)
    with enforced(trusted_prefixes, source):
        parsed = parser.parse_object({"model": config})
        args = vars(parser.instantiate_classes(parsed).model)
    check_arguments(**args)
    return {name: args[name] for name in _PARAMETERS}


def stored_hparams(args: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters a model built from ``config`` records: every argument (the
    defaults filled in), then the configuration itself (domain and backbone as their
    class_path/init_args), as Lightning's save_hyperparameters plus the update did."""
    from diffplat.model import Hyperparameters

    hp = Hyperparameters({k: v for k, v in args.items() if k not in ("domain", "backbone")})
    hp.update(module_config(config))
    return hp


def build_model(config: dict[str, Any], trusted_prefixes: tuple[str, ...] | None = None,
                source: str = "a model configuration"):
    """A DiffusionModel from its stored configuration, under the trust rule."""
    args = parse_arguments(config, trusted_prefixes, source)
    return model_from_arguments(args, stored_hparams(args, config))


def _parameters() -> tuple[str, ...]:
    import inspect

    return tuple(inspect.signature(model_arguments).parameters)


_PARAMETERS = _parameters()
