"""The distillation loop: plain PyTorch, atomic checkpoints, exact resume.

The student is a ``DiffusionModel`` (diffplat.model); its checkpoint is the one a training
run writes (``state_dict``, ``hyper_parameters``, ``diffplat``), read by the model store
under the trust rule like any other, plus a ``distill`` entry with what a restart needs:
the step, the random generator's state, the optimizer, the auxiliary network (the current
round's teacher in progressive distillation, the EMA target in consistency distillation)
and the seconds spent. Everything random is drawn from one ``torch.Generator`` seeded with
``seed``, so a run stopped after any step and resumed gives the student of an uninterrupted
run bit for bit (on the same machine and thread count).

The student's checkpoint records its sampler (``ddim``), its NFE (``sample_steps``) and its
grid as the default step schedule beside it (``last.ckpt.steps.json``,
diffplat.store.schedules.save_default_schedule), so ``diffplat sample --ckpt`` draws in K
steps on the grid it was distilled on.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffplat.fileio import atomic_write
from diffplat.store.checkpoint import NonFiniteCheckpointError, nonfinite_tensors

CKPT_NAME = "last.ckpt"


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside ``path``, fsynced and renamed over it; a
    checkpoint holding NaN or Inf is refused before anything is written."""
    bad = nonfinite_tensors(obj.get("state_dict", {}))
    if bad:
        raise NonFiniteCheckpointError(f"refusing to write {path}: {len(bad)} weights hold "
                                       f"NaN or Inf (e.g. {', '.join(bad[:3])})")
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def _plain(value: Any) -> Any:
    """Containers as plain dict/list (a checkpoint is read with weights_only)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value) if isinstance(value, tuple) else \
            [_plain(v) for v in value]
    return value


class Distiller:
    """Trains ``student`` to do in K steps what ``teacher`` does in many.

    Args:
        student: the DiffusionModel to train (its ``denoiser`` is trained; its EMA weights,
            which sampling uses, are set to the trained weights at every checkpoint).
        teacher: any ``denoise(x_t, t, **cond) -> x0_hat`` (a model's ``ema_denoiser``, the
            toy's exact denoiser); it is never trained.
        method: a ProgressiveDistillation or ConsistencyDistillation.
        steps: optimizer steps in all (progressive: split evenly over the rounds).
        lr: Adam's learning rate; progressive distillation anneals it linearly to 0 within
            each round (Salimans & Ho 2022, App. E), consistency distillation keeps it.
        batch_size: data items per step (drawn with replacement from the training split).
        seed: seeds the one generator everything random is drawn from.
        out_dir: where ``last.ckpt`` goes (None: no checkpoints).
        save_every: steps between checkpoints (and one at the end).
        record: what the checkpoint's training record says besides steps and seconds
            (command, teacher).
    """

    def __init__(self, student: nn.Module, teacher: Any, method: Any, steps: int,
                 lr: float = 1e-4, batch_size: int = 256, seed: int = 0,
                 out_dir: str | Path | None = None, save_every: int = 500,
                 record: dict[str, Any] | None = None):
        if steps < method.rounds:
            raise ValueError(f"--steps {steps}: {method.name} distillation to {method.nfe} "
                             f"steps takes {method.rounds} rounds, at least one step each")
        self.student, self.teacher, self.method = student, teacher, method
        self.steps, self.lr, self.batch_size, self.seed = steps, lr, batch_size, seed
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.save_every, self.record = save_every, dict(record or {})
        self.domain = student.domain
        self.domain.setup("fit")
        self.dataset = self.domain.train_dataset()
        self.step, self.seconds = 0, 0.0
        self.generator = torch.Generator().manual_seed(seed)
        self.aux = copy.deepcopy(student.denoiser).requires_grad_(False).eval()
        self.optimizer = self._optimizer()
        self.per_round = steps // method.rounds if method.halves else steps

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.student.backbone.parameters(), lr=self.lr)

    # -- the schedule of rounds -----------------------------------------------------------
    def stage(self, step: int) -> int:
        """The round a step belongs to (progressive; the last round takes the remainder)."""
        if not self.method.halves:
            return 0
        return min(step // self.per_round, self.method.rounds - 1)

    def _lr(self, step: int) -> float:
        if not self.method.halves:
            return self.lr
        stage = self.stage(step)
        start = stage * self.per_round
        end = self.steps if stage == self.method.rounds - 1 else start + self.per_round
        return self.lr * (1 - (step - start) / (end - start))

    def _new_round(self) -> None:
        """Progressive: the student so far becomes the teacher; a fresh optimizer."""
        self.aux.load_state_dict(self.student.denoiser.state_dict())
        self.optimizer = self._optimizer()

    # -- one step -------------------------------------------------------------------------
    def _batch(self):
        idx = torch.randint(len(self.dataset), (self.batch_size,), generator=self.generator)
        batch = self.domain.collate([self.dataset[int(i)] for i in idx])
        x0, cond, space = self.domain.unpack(batch)
        device = self.student.device
        return x0.to(device), {k: v.to(device) if torch.is_tensor(v) else v
                               for k, v in cond.items()}, space

    def train_step(self) -> float:
        stage = self.stage(self.step)
        if self.method.halves and stage > 0 and self.step == stage * self.per_round:
            self._new_round()
        x0, cond, space = self._batch()
        self.student.train()
        if self.method.halves:
            teacher = self.teacher if stage == 0 else self.aux
            per = self.method.loss(self.student.denoiser, teacher, x0, cond, space,
                                   self.generator, stage)
        else:
            per = self.method.loss(self.student.denoiser, self.teacher, self.aux, x0, cond,
                                   space, self.generator)
        loss = per.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"distillation loss is {float(loss)} at step "
                                     f"{self.step}; lower --lr")
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if not self.method.halves:  # eq. 8: theta- <- mu theta- + (1 - mu) theta
            with torch.no_grad():
                mu = self.method.target_decay
                for tgt, src in zip(self.aux.parameters(), self.student.denoiser.parameters()):
                    tgt.mul_(mu).add_(src.detach(), alpha=1 - mu)
        self.step += 1
        return float(loss.detach())

    def run(self, stop_at: int | None = None, log_every: int = 0, log=print) -> Path | None:
        """Train to ``steps`` (or to ``stop_at``, for a planned interruption); write
        checkpoints on the way. Returns the checkpoint path (None without ``out_dir``)."""
        end = self.steps if stop_at is None else min(stop_at, self.steps)
        start = time.process_time()
        while self.step < end:
            loss = self.train_step()
            if log_every and (self.step % log_every == 0 or self.step == end):
                log(f"step {self.step}/{self.steps} round {self.stage(self.step - 1) + 1}/"
                    f"{self.method.rounds} loss {loss:.4g}")
            if self.out_dir is not None and self.step % self.save_every == 0 \
                    and self.step < end:
                self.seconds += time.process_time() - start
                start = time.process_time()
                self.save()
        self.seconds += time.process_time() - start
        self._publish()
        return self.save() if self.out_dir is not None else None

    # -- checkpoints ----------------------------------------------------------------------
    def _publish(self) -> None:
        """The sampled (EMA) weights are the trained ones; the student samples in K steps."""
        self.student.ema.shadow.load_state_dict(self.student.backbone.state_dict())
        self.student.hparams["sampler"] = "ddim"
        self.student.hparams["sample_steps"] = self.method.nfe

    def checkpoint(self) -> dict[str, Any]:
        self._publish()
        record = {**self.student.train_record, **self.record, "steps": self.step,
                  "seconds": round(self.seconds, 3), "device": str(self.student.device),
                  "distill": {**self.method.config(), "levels": self.method.levels()}}
        self.student.train_record = record
        return {
            "state_dict": self.student.state_dict(),
            "hyper_parameters": _plain(dict(self.student.hparams)),
            "diffplat": {"run_config": _plain(self.student.run_config),
                         "domain": self.domain.name, "train_record": _plain(record),
                         "domain_state": self.domain.sampling_state()},
            "distill": {"step": self.step, "seconds": self.seconds, "seed": self.seed,
                        "config": self.method.config(),
                        "options": {"steps": self.steps, "lr": self.lr,
                                    "batch_size": self.batch_size},
                        "generator": self.generator.get_state(),
                        "optimizer": self.optimizer.state_dict(),
                        "aux": self.aux.backbone.state_dict()},
        }

    def save(self) -> Path:
        from diffplat.store.schedules import save_default_schedule

        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / CKPT_NAME
        atomic_save(self.checkpoint(), path)
        save_default_schedule(path, {"sampler": "ddim", "steps": self.method.nfe,
                                     "nfe": self.method.nfe, "levels": self.method.levels(),
                                     "options": self.method.sampler_options(),
                                     "method": self.method.name})
        return path

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint this loop wrote (same method and options)."""
        state = ckpt.get("distill")
        if not isinstance(state, dict):
            raise ValueError("the checkpoint was not written by `diffplat distill` (no "
                             "distill state to resume from)")
        if state["config"] != self.method.config() or state["seed"] != self.seed or \
                state["options"] != {"steps": self.steps, "lr": self.lr,
                                     "batch_size": self.batch_size}:
            raise ValueError(f"cannot resume: the checkpoint was distilled with "
                             f"{state['config']} {state['options']} seed {state['seed']}; "
                             "give the same options")
        self.student.load_state_dict(ckpt["state_dict"])
        self.aux.backbone.load_state_dict(state["aux"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.generator.set_state(state["generator"])
        # a step that starts a round replaces this optimizer (train_step), as it would have
        self.optimizer.load_state_dict(state["optimizer"])
