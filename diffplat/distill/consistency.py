"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models",
ICML; Alg. 2).

A consistency function f(y, s) maps every point of a probability-flow ODE trajectory to
its origin; with the boundary condition f(y, epsilon) = y it is trained by making it agree
with itself along the trajectory. On the discretisation epsilon = s_1 < ... < s_N = T
(Karras et al.'s rho = 7 levels, sec. 5), Alg. 2 draws n, x0 from the data and

    y_{n+1}   = x0 + s_{n+1} z,
    y^_n      = one step of the teacher's ODE solver from s_{n+1} to s_n,          (Alg. 2)
    loss      = d( f_theta(y_{n+1}, s_{n+1}),  f_theta-(y^_n, s_n) ),              (eq. 7)
    theta-   <- stopgrad(mu theta- + (1 - mu) theta)                                (eq. 8)

with d the squared L2 distance (lambda = 1) and the teacher's solver Heun's method
(Karras et al. 2022, Alg. 1), as the paper's EDM teachers (App. C). In the frame of
diffplat.distill.frame the ODE is dy/ds = (y - D(y, s)) / s.

The student is the teacher's architecture and target, so that it is a diffusion model like
any other (``diffplat sample`` calls its ``denoise``). Its consistency function is its
denoised estimate, f(y, s) = D_student(y, s): every target but ``x0`` writes D as
c_skip(s) y + c_out(s) F with c_skip -> 1 and c_out -> 0 as s -> 0 (diffplat.targets; the
``edm`` target is exactly the paper's c_skip, c_out of App. C, eq. in sec. 3, with
epsilon = 0), so the boundary condition holds to O(epsilon) by the parameterisation, and
it holds exactly where the loss meets it: the target at s_1 = epsilon is f(y, epsilon) = y.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffplat.distill.frame import Denoise, ddim_step, denoise_at, karras_levels, per_sample
from diffplat.noise import NoiseSpace
from diffplat.schedules import Schedule

#: the discretisation and target decay of the paper's CIFAR-10 consistency distillation
POINTS, TARGET_DECAY = 18, 0.95
#: DDIM's eta for multistep consistency sampling (Alg. 1): large enough that the step's
#: whole next level is fresh noise (sigma_up = next level, sigma_down = 0 in
#: diffplat.samplers.karras.ancestral_levels), y' = f(y, s) + s' z
ALG1_ETA = 1000.0


def sampling_levels(grid: Tensor, nfe: int) -> list[float]:
    """K + 1 levels for Alg. 1 (multistep consistency sampling): T, then K - 1
    intermediate points of the training grid (the ones nearest a Karras rho = 7 split of
    [epsilon, T] into K), then 0."""
    if nfe == 1:
        return [float(grid[0]), 0.0]
    hi, lo = float(grid[0]), float(grid[-1])
    ramp = torch.linspace(0, 1, nfe + 1, dtype=torch.float64)[1:-1]
    want = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    chosen: list[int] = []
    for w in want.tolist():
        idx = int((grid.log() - torch.log(torch.tensor(w, dtype=torch.float64))).abs().argmin())
        idx = max(idx, (chosen[-1] + 1) if chosen else 1)
        chosen.append(min(idx, len(grid) - 1))
    if len(set(chosen)) < len(chosen):
        raise ValueError(f"{nfe} steps need more than the {len(grid)} points of the "
                         "consistency grid (--points)")
    return [hi, *(float(grid[i]) for i in chosen), 0.0]


class ConsistencyDistillation:
    """Song et al. (2023), Alg. 2, on any ``denoise(x_t, t)``.

    Args:
        schedule: the schedule of the teacher (and the student).
        nfe: K, the student's steps when sampling (Alg. 1; one network call each).
        points: N, the levels of the discretisation (default 18, the paper's CIFAR-10).
        target_decay: mu of the target network's EMA (eq. 8; default 0.95).
        level_min, level_max: epsilon and T (default 0.002 and 80, clipped to the
            schedule).

    Shapes:
        x0: the domain's data layout with batch size B; ``loss`` returns [B].
    """

    name = "consistency"
    halves = False

    def __init__(self, schedule: Schedule, nfe: int, points: int = POINTS,
                 target_decay: float = TARGET_DECAY, level_min: float | None = None,
                 level_max: float | None = None):
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise ValueError(f"--points must be an integer >= 2, got {points!r}")
        if not 0.0 <= float(target_decay) < 1.0:
            raise ValueError(f"--target-decay must be in [0, 1), got {target_decay}")
        self.schedule, self.nfe, self.points = schedule, int(nfe), points
        self.target_decay = float(target_decay)
        self.level_min, self.level_max = level_min, level_max
        self.rounds = 1
        self.grid = karras_levels(schedule, points, level_min, level_max)  # T ... epsilon
        self._levels = sampling_levels(self.grid, self.nfe)

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "nfe": self.nfe, "points": self.points,
                "target_decay": self.target_decay, "level_min": self.level_min,
                "level_max": self.level_max}

    def levels(self) -> list[float]:
        """The student's K + 1 sampling levels (ending in 0)."""
        return list(self._levels)

    def sampler_options(self) -> dict[str, Any]:
        """Alg. 1 as the ``ddim`` sampler: denoise, then re-noise afresh to the next level
        (deterministic re-noising with the implied noise measured worse on the toy)."""
        return {"eta": ALG1_ETA}

    def heun(self, teacher: Denoise, y: Tensor, s: Tensor, s_next: Tensor,
             space: NoiseSpace, cond: dict[str, Any]) -> Tensor:
        """One Heun step of dy/ds = (y - D(y, s)) / s from s to s_next > 0 (Karras et al.
        2022, Alg. 1, lines 5-7): the Euler step (a DDIM step, eq. 1) and its trapezoidal
        correction."""
        d0 = denoise_at(teacher, y, s, self.schedule, space, cond)
        y_euler = ddim_step(y, d0, s, s_next, space)
        d1 = denoise_at(teacher, y_euler, s_next, self.schedule, space, cond)
        slope = (y - d0) / space.expand(s.to(y.dtype), y) \
            + (y_euler - d1) / space.expand(s_next.to(y.dtype), y)
        return y + space.expand(((s_next - s) / 2).to(y.dtype), y) * slope

    def loss(self, student: Denoise, teacher: Denoise, target: Denoise, x0: Tensor,
             cond: dict[str, Any], space: NoiseSpace, generator: torch.Generator) -> Tensor:
        """Per-sample squared distance between f_theta at s_{n+1} and f_theta- at the point
        the teacher's Heun step reaches at s_n (eq. 7, lambda = 1)."""
        batch = space.batch_size(x0)
        n = torch.randint(self.points - 1, (batch,), generator=generator)
        s_hi, s_lo = per_sample(self.grid, n), per_sample(self.grid, n + 1)
        eps = space.project(space.sample_like(x0, generator).to(x0.device))
        y = x0 + space.expand(s_hi.to(x0.dtype), x0) * eps
        with torch.no_grad():
            y_lo = self.heun(teacher, y, s_hi, s_lo, space, cond)
            anchored = space.expand((n + 1 == self.points - 1).to(x0.dtype), x0)
            f_lo = denoise_at(target, y_lo, s_lo, self.schedule, space, cond)
            goal = anchored * y_lo + (1 - anchored) * f_lo      # f(y, epsilon) = y
        pred = denoise_at(student, y, s_hi, self.schedule, space, cond)
        return space.mean((pred - goal) ** 2)
