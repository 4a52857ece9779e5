"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling
of Diffusion Models", ICLR; Alg. 2).

A teacher sampled with N deterministic DDIM steps is distilled into a student that takes
N / 2 steps: at each point of the student's grid, the student's one DDIM step must land
where two DDIM steps of the teacher land. The student then becomes the teacher of the next
round, and after R rounds a K-step student remains (N = K 2^R).

In the variance-exploding frame (diffplat.distill.frame, eq. 1), with the student at level
s, the teacher's midpoint s' and the student's next level s'':

    y'  = D_teacher(y, s)   + (s' / s)  (y  - D_teacher(y, s)),
    y'' = D_teacher(y', s') + (s''/ s') (y' - D_teacher(y', s')),

and the student's one step y'' = x~ + (s'' / s)(y - x~) solves to the target

    x~ = (y'' - (s'' / s) y) / (1 - s'' / s),                                           (2)

the paper's Alg. 2 target x~ = (z'' - (sigma''/sigma) z) / (alpha'' - (sigma''/sigma)
alpha) written with y = z / alpha. The student's estimate D_student(y, s) is regressed on
x~ with the paper's "truncated SNR" weight max(SNR, 1) = max(1 / s^2, 1) (sec. 4, eq. 9
in the x-space form), and y = x0 + s eps with x0 from the data (Alg. 2, line 4).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffplat.distill.frame import (
    Denoise,
    check_spacing,
    ddim_step,
    denoise_at,
    nested_grid,
    per_sample,
    round_grid,
)
from diffplat.noise import NoiseSpace
from diffplat.schedules import Schedule

#: the teacher's DDIM steps before the first round, at least (rounded up to K 2^R)
TEACHER_STEPS = 64


def rounds_for(nfe: int, teacher_steps: int | None = None) -> int:
    """R with K 2^R >= ``teacher_steps`` (default 64): the rounds that halve a teacher of
    at least that many DDIM steps down to K = ``nfe`` (at least one round)."""
    want = TEACHER_STEPS if teacher_steps is None else int(teacher_steps)
    if want < 2 * nfe:
        raise ValueError(f"--teacher-steps {want}: progressive distillation halves the "
                         f"teacher's steps, so it needs at least 2 x --nfe = {2 * nfe}")
    return max(1, math.ceil(math.log2(want / nfe) - 1e-9))


class ProgressiveDistillation:
    """Salimans & Ho (2022), Alg. 2, on any ``denoise(x_t, t)``.

    Args:
        schedule: the schedule of the teacher (and the student).
        nfe: K, the student's steps (one network call each).
        teacher_steps: DDIM steps of the teacher in round 1, at least (default 64; rounded
            up to K 2^R).
        spacing: the fine grid's spacing (default: the schedule's, ``noise_levels``).
        level_max: the top noise level (default 80, clipped to the schedule).

    Shapes:
        x0: the domain's data layout with batch size B; ``loss`` returns [B].
    """

    name = "progressive"
    #: a new round starts from the last round's student, which becomes the teacher
    halves = True

    def __init__(self, schedule: Schedule, nfe: int, teacher_steps: int | None = None,
                 spacing: str | None = None, level_max: float | None = None):
        self.schedule, self.nfe = schedule, int(nfe)
        self.rounds = rounds_for(self.nfe, teacher_steps)
        self.spacing = check_spacing(spacing)
        self.level_max = level_max
        self.fine = nested_grid(schedule, self.nfe, self.rounds, self.spacing, level_max)

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "nfe": self.nfe, "rounds": self.rounds,
                "teacher_steps": self.nfe * 2**self.rounds, "spacing": self.spacing,
                "level_max": self.level_max}

    def grids(self, stage: int) -> tuple[Tensor, Tensor]:
        """(teacher grid, student grid) of round ``stage`` (0-based): strides 2^r, 2^(r+1)
        of the fine grid."""
        return round_grid(self.fine, 2**stage), round_grid(self.fine, 2 ** (stage + 1))

    def levels(self) -> list[float]:
        """The final student's K + 1 noise levels (its sampling grid, ending in 0)."""
        return self.grids(self.rounds - 1)[1].tolist()

    def sampler_options(self) -> dict[str, Any]:
        """The student samples with deterministic DDIM, as it was distilled."""
        return {}

    def loss(self, student: Denoise, teacher: Denoise, x0: Tensor, cond: dict[str, Any],
             space: NoiseSpace, generator: torch.Generator, stage: int) -> Tensor:
        """Per-sample weighted x-space error of the student against target (2);
        ``teacher`` is this round's (the given teacher in round 0, then the last round's
        student)."""
        t_grid, s_grid = self.grids(stage)
        batch = space.batch_size(x0)
        i = torch.randint(len(s_grid) - 1, (batch,), generator=generator)
        s0, s1, s2 = (per_sample(s_grid, i), per_sample(t_grid, 2 * i + 1),
                      per_sample(s_grid, i + 1))
        eps = space.project(space.sample_like(x0, generator).to(x0.device))
        y = x0 + space.expand(s0.to(x0.dtype), x0) * eps
        with torch.no_grad():
            d0 = denoise_at(teacher, y, s0, self.schedule, space, cond)
            y1 = ddim_step(y, d0, s0, s1, space)
            d1 = denoise_at(teacher, y1, s1, self.schedule, space, cond)
            y2 = ddim_step(y1, d1, s1, s2, space)
            ratio = space.expand((s2 / s0).to(x0.dtype), x0)
            target = (y2 - ratio * y) / (1 - ratio)                                 # eq. (2)
        pred = denoise_at(student, y, s0, self.schedule, space, cond)
        weight = torch.clamp(s0.pow(-2), min=1.0).to(x0.dtype)          # max(SNR, 1)
        return weight * space.mean((pred - target) ** 2)
