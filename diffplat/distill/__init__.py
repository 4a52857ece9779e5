"""Distillation: a few-step student of any diffusion model, on the ``denoise(x_t, t)``
contract alone, so every domain and every plug-in gets it.

* ``progressive``: Salimans & Ho (2022), Alg. 2 (diffplat.distill.progressive);
* ``consistency``: Song et al. (2023), Alg. 2 (diffplat.distill.consistency).

``distill(teacher, method, nfe, ...)`` takes a checkpoint, an export folder, the name of a
shipped model, or any ``denoise(x_t, t)`` with a ``student`` model to train (the toy's exact
denoiser in the tests), and returns the student: a ``DiffusionModel`` whose checkpoint
(``out/last.ckpt``) samples in K = ``nfe`` steps by default (``diffplat sample --ckpt``,
``diffplat.load``) and exports like any other (``diffplat export``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffplat.distill.consistency import ConsistencyDistillation
from diffplat.distill.loop import CKPT_NAME, Distiller
from diffplat.distill.progressive import ProgressiveDistillation

METHODS = {"progressive": ProgressiveDistillation, "consistency": ConsistencyDistillation}


def make_method(name: str, schedule, nfe: int, **options: Any):
    """A distillation method by name; an unknown name lists the choices, an option the
    method does not take is named."""
    import inspect

    from diffplat.checks import positive_int

    key = str(name).lower()
    if key not in METHODS:
        raise ValueError(f"unknown distillation method {name!r}; choose one of "
                         f"{', '.join(METHODS)}")
    positive_int(nfe, "nfe")
    cls = METHODS[key]
    takes = set(inspect.signature(cls).parameters) - {"schedule", "nfe"}
    given = {k: v for k, v in options.items() if v is not None}
    wrong = sorted(set(given) - takes)
    if wrong:
        raise ValueError(f"{key} distillation takes no option {', '.join(wrong)} (its "
                         f"options: {', '.join(sorted(takes))})")
    return cls(schedule, nfe, **given)


def load_teacher(source: str | Path, device: Any = "cpu"):
    """A model from a checkpoint, an export folder or a shipped model's name, read under
    the trust rule (diffplat.store)."""
    from diffplat.store import load_model

    path = Path(source)
    if not path.exists():
        from diffplat.models import find_model

        path = find_model(str(source))
    return load_model(path, map_location=device).to(device), path


def student_of(teacher_model):
    """A student with the teacher's architecture, schedule and target, its weights
    initialised from the teacher's EMA weights (both papers start from the teacher)."""
    import copy

    student = copy.deepcopy(teacher_model)
    student.backbone.load_state_dict(teacher_model.ema.shadow.state_dict())
    student.requires_grad_(True)
    student.ema.shadow.requires_grad_(False)
    return student


def distill(teacher: Any, method: str = "progressive", nfe: int = 4, *, student=None,
            steps: int = 2000, lr: float = 1e-4, batch_size: int = 256, seed: int = 0,
            out: str | Path | None = None, resume: bool = False, save_every: int = 500,
            log_every: int = 0, stop_at: int | None = None, device: Any = "cpu",
            record: dict[str, Any] | None = None, **options: Any):
    """Distil ``teacher`` into a ``nfe``-step student; returns the student (eval mode).

    Args:
        teacher: a checkpoint, an export folder, a shipped model's name, or any
            ``denoise(x_t, t)`` (then ``student`` is required).
        method: ``progressive`` or ``consistency``.
        nfe: K, the student's network evaluations per sample.
        student: the model to train (default: a copy of the teacher model).
        steps, lr, batch_size, seed: the optimisation (see ``Distiller``).
        out: folder of the student's checkpoint ``last.ckpt`` (None: none written).
        resume: continue from ``out/last.ckpt`` when it exists (same options).
        save_every: steps between checkpoints.
        stop_at: stop after this many steps in all (a planned interruption).
        options: the method's own (``teacher_steps``, ``spacing``, ``level_max`` for
            progressive; ``points``, ``target_decay``, ``level_min``, ``level_max`` for
            consistency).
    """
    import torch

    from diffplat.checks import positive_int

    positive_int(steps, "steps")
    positive_int(batch_size, "batch_size")
    if not float(lr) > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    source = None
    if isinstance(teacher, (str, Path)):
        teacher_model, source = load_teacher(teacher, device)
        if student is None:
            student = student_of(teacher_model)
        teacher = teacher_model.ema_denoiser.requires_grad_(False)
    elif student is None:
        raise ValueError("a teacher given as a function needs the student model to train "
                         "(student=)")
    student = student.to(device)
    if getattr(student.denoiser, "self_condition", False):
        raise NotImplementedError("distilling a self-conditioned model is not supported")
    algo = make_method(method, student.schedule, nfe, **options)
    rec = {"teacher": str(source) if source is not None else type(teacher).__name__,
           **(record or {})}
    loop = Distiller(student, teacher, algo, steps, lr=lr, batch_size=batch_size, seed=seed,
                     out_dir=out, save_every=save_every, record=rec)
    ckpt = Path(out) / CKPT_NAME if out is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        from diffplat.store import read_checkpoint

        loop.restore(read_checkpoint(ckpt, map_location=device))
    elif out is not None and ckpt.is_file():
        raise FileExistsError(f"{ckpt} exists: resume it (--ckpt_path last) or choose "
                              "another --out")
    with torch.enable_grad():
        loop.run(stop_at=stop_at, log_every=log_every)
    return student.eval()


__all__ = ["CKPT_NAME", "METHODS", "ConsistencyDistillation", "Distiller",
           "ProgressiveDistillation", "distill", "load_teacher", "make_method", "student_of"]
