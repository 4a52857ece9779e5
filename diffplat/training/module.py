"""DiffusionModule: the one LightningModule every domain trains with."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from diffplat import samplers as samplers_mod
from diffplat import schedules as schedules_mod
from diffplat.backbone import Backbone
from diffplat.domain import Domain
from diffplat.losses import DiffusionLoss
from diffplat.progress import say
from diffplat.schedules import LOG_SNR_LIMIT
from diffplat.targets import Denoiser
from diffplat.training.data import StepIndexedLoader
from diffplat.training.ema import EMA
from diffplat.training.optim import AdaptiveClipper, warmup_cosine


class NonFiniteLossError(FloatingPointError):
    """The training loss, a gradient or the weights became NaN or Inf; the message names
    the step."""


class _SkipStep(Exception):
    """Raised inside the optimizer closure to skip a step whose gradients are not finite."""


def _step_seed(seed: int, step: int, rank: int, salt: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}/{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 62) - 1)


class DiffusionModule(pl.LightningModule):
    """A diffusion model: backbone + schedule + target + loss + the domain's data and noise.

    Args:
        domain: the Domain plug-in (data, noise space, metrics, writer, preview).
        backbone: network called as ``backbone(c_in * x_t, c_noise, **cond)``
            (a ``diffplat.backbone.Backbone``).
        schedule: schedule name (linear, cosine, sigmoid, polynomial, edm, flow).
        schedule_options: its options, e.g. ``{"shift": -1.0}``.
        target: prediction target (eps, x0, v, edm, flow).
        sigma_data: data standard deviation for the preconditioning and the edm target.
        weighting: loss weighting (uniform, min_snr, edm, sigmoid); options in
            ``weighting_options``.
        t_sampler: training-time sampler (uniform, low_discrepancy, lognormal,
            logit_normal); options in ``t_options`` (``{high: 0.4}``: trained on t <= 0.4
            only, a refiner that cannot sample from noise; validation sampling is skipped).
        lr, weight_decay, betas: AdamW settings.
        warmup_steps: linear learning-rate warm-up.
        decay_steps: cosine decay length (default: the trainer's max_steps; 0 = constant).
        min_lr_ratio: learning rate at the end of the decay, relative to ``lr``.
        clip: gradient clipping: "none", "norm" (at ``clip_value``) or "adaptive"
            (EDM-molecules: 1.5 x mean + 2 x std of the last 50 norms).
        clip_value: maximum norm for ``clip="norm"``.
        ema_decay: decay of the weight EMA used for validation and sampling.
        batch_size, val_batch_size, num_workers: data loading.
        seed: seed of the data order and of the training noise (exact resume needs no RNG
            state: every step's randomness derives from (seed, step, rank)).
        sampler, sample_steps, sample_num, sample_every_n_epochs: validation-time sampling
            and scoring with the domain's metrics (``sample_num = 0`` turns it off).
        log_snr_buckets: the training loss is also logged per equal-width log-SNR bucket.
        on_nonfinite: "stop" (raise, naming the step; the last good checkpoint stays) or
            "skip" (skip the batch and count it in ``train/skipped_batches``; the count is
            printed at the end of ``fit``).
        max_skipped_fraction: with ``on_nonfinite="skip"``, the run fails once more than
            this fraction of its batches were skipped (counted over at least 100 batches,
            so up to 10 of the first 100 at the default 0.1): a run that skips most of its
            batches learns nothing and must not look finished.
        compile: wrap the backbone in torch.compile when training on a GPU.
        self_condition: self-conditioning (Chen et al. 2022, "Analog Bits", sec. 3.2):
            trained with an earlier no-gradient x0_hat as input for half the batches, and
            sampled feeding each network call the previous call's x0_hat. Needs a backbone
            built for it (``supports_self_condition``, e.g. EGNNBackbone(self_condition=True)).
        coupling: "independent" or "minibatch_ot" (noise re-paired with the batch's data by
            minibatch optimal transport, Tong et al. 2023; the ``flow`` schedule only).
    """

    def __init__(self, domain: Domain, backbone: Backbone, schedule: str = "cosine",
                 schedule_options: dict[str, Any] | None = None, target: str = "eps",
                 sigma_data: float = 1.0, weighting: str = "uniform",
                 weighting_options: dict[str, Any] | None = None, t_sampler: str = "uniform",
                 t_options: dict[str, Any] | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                 warmup_steps: int = 100, decay_steps: int | None = None,
                 min_lr_ratio: float = 0.1, clip: str = "norm", clip_value: float = 1.0,
                 ema_decay: float = 0.999, batch_size: int = 256,
                 val_batch_size: int | None = None, num_workers: int = 0, seed: int = 0,
                 sampler: str = "heun", sample_steps: int = 18, sample_num: int = 1000,
                 sample_every_n_epochs: int = 1, log_snr_buckets: int = 8,
                 on_nonfinite: str = "stop", max_skipped_fraction: float = 0.1,
                 compile: bool = False,
                 self_condition: bool = False, coupling: str = "independent"):
        super().__init__()
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
        samplers_mod.get(sampler)  # unknown names fail at construction, listing the valid ones
        supports = bool(getattr(backbone, "supports_self_condition", False))
        if self_condition != supports:
            raise ValueError(
                f"self_condition={self_condition} but the backbone {type(backbone).__name__} "
                f"{'takes' if supports else 'does not take'} x_self_cond: set both "
                "model.self_condition and the backbone's self_condition (a backbone with "
                "supports_self_condition), or neither")
        with warnings.catch_warnings():
            # built by hand (load_module) the backbone is a module, not a configuration;
            # Lightning warns about it, and it is dropped from hparams just below
            warnings.filterwarnings("ignore", message="Attribute 'backbone' is an instance of "
                                                      "`nn.Module`")
            self.save_hyperparameters()
        for key in ("domain", "backbone"):
            # inside LightningCLI (and build_module) these are their class_path/init_args
            # configurations; built by hand they are objects, which a checkpoint cannot hold
            if not isinstance(self.hparams.get(key), dict):
                self.hparams.pop(key, None)
        self.domain = domain
        self.backbone = backbone
        self.schedule = schedules_mod.get(schedule, **(schedule_options or {}))
        self.ema = EMA(backbone, ema_decay)
        # The two denoisers only wrap modules registered above; object.__setattr__ keeps
        # them out of the module tree so the state dict holds each weight once.
        object.__setattr__(self, "denoiser",
                           Denoiser(backbone, self.schedule, target, sigma_data=sigma_data,
                                    self_condition=self_condition))
        object.__setattr__(self, "ema_denoiser",
                           Denoiser(self.ema.shadow, self.schedule, target,
                                    sigma_data=sigma_data, self_condition=self_condition))
        self.loss_fn = DiffusionLoss(weighting, t_sampler, weighting_options, t_options,
                                     self_condition=self_condition, coupling=coupling)
        for d in (self.denoiser, self.ema_denoiser):  # a truncated t-range: a refiner
            d.max_t = self.loss_fn.time_range[1]
        self.clipper = AdaptiveClipper()
        self.register_buffer("grad_norms", torch.zeros(self.clipper.size))
        self.register_buffer("grad_norms_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("skipped_batches", torch.zeros((), dtype=torch.long))
        lo, hi = self.schedule.log_snr_range()
        self.register_buffer("bucket_edges", torch.linspace(lo, hi, log_snr_buckets + 1),
                             persistent=False)
        self.register_buffer("bucket_sum", torch.zeros(log_snr_buckets), persistent=False)
        self.register_buffer("bucket_count", torch.zeros(log_snr_buckets), persistent=False)
        #: filled by the CLI: the whole run configuration, stored in every checkpoint
        self.run_config: dict[str, Any] | None = None
        #: how the weights were made: steps, wall seconds of training (over resumes),
        #: device, first command; stored in checkpoints and exports (model cards)
        self.train_record: dict[str, Any] = {}
        self._fit_clock: tuple[float, float] | None = None
        self._skipped = False

    # -- data ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.domain.setup(stage)
        if self.device.type == "cpu":
            from diffplat.runtime import flush_subnormals, reserve_for_workers

            flush_subnormals()  # ~50x faster CPU steps; why in diffplat/runtime.py
            reserve_for_workers(self.hparams.num_workers)  # a core per DataLoader worker
        if self.hparams.compile and self.device.type == "cuda":
            # object.__setattr__ keeps the compiled wrapper out of the state dict
            object.__setattr__(self.denoiser, "compiled", torch.compile(self.backbone))

    def _batches_done(self) -> int:
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    def train_dataloader(self):
        return StepIndexedLoader(self.domain.train_dataset(), self.hparams.batch_size,
                                 collate_fn=self.domain.collate, seed=self.hparams.seed,
                                 counter=self._batches_done, rank=self.global_rank,
                                 world=self.trainer.world_size,
                                 num_workers=self.hparams.num_workers)

    def _eval_loader(self, dataset):
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.hparams.val_batch_size or self.hparams.batch_size,
            shuffle=False, collate_fn=self.domain.collate, num_workers=self.hparams.num_workers)

    def val_dataloader(self):
        return self._eval_loader(self.domain.val_dataset())

    def test_dataloader(self):
        return self._eval_loader(self.domain.test_dataset())

    # -- training -----------------------------------------------------------------------------
    def _generator(self, salt: str, index: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(_step_seed(self.hparams.seed, index, self.global_rank, salt))
        return gen

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        self._skipped = False
        x0, cond, space = self.domain.unpack(batch)
        step = self._batches_done()
        losses, t = self.loss_fn(self.denoiser, x0, generator=self._generator("train", step),
                                 noise_space=space, **cond)
        loss = losses.mean()
        if not torch.isfinite(loss):
            bad_data = _nonfinite_inputs(x0, cond)
            if self.hparams.on_nonfinite == "skip":
                self._skip()
                return None
            if bad_data:  # the data, not the optimisation: say so
                raise NonFiniteLossError(
                    f"training batch {step} (step {self.global_step}) holds NaN or Inf in "
                    f"its data ({', '.join(bad_data[:3])}): the training data is bad, not the "
                    "learning rate; clean the data (or set model.on_nonfinite=skip to skip "
                    "such batches). The last checkpoint written before it is kept")
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.global_step} (batch {step}) "
                "from finite data; the last checkpoint written before it is kept. Lower the "
                "learning rate, or set model.on_nonfinite=skip")
        self._bucket(losses.detach(), t.detach())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(losses))
        return loss

    def _skip(self) -> None:
        """Count a skipped batch; fail past ``max_skipped_fraction`` of the batches."""
        self._skipped = True
        self.skipped_batches += 1
        self.log("train/skipped_batches", self.skipped_batches.float())
        skipped, batches = int(self.skipped_batches), self._batches_done()
        limit = self.hparams.get("max_skipped_fraction", 0.1)
        if skipped > limit * max(batches, 100):
            raise NonFiniteLossError(
                f"{skipped} of {batches} batches skipped for NaN or Inf (model.on_nonfinite="
                f"skip), more than model.max_skipped_fraction={limit:g} allows; the last "
                "checkpoint written before it is kept. Check the data and the learning rate, "
                "or raise model.max_skipped_fraction")

    def _bucket(self, losses: Tensor, t: Tensor) -> None:
        lam = self.schedule.log_snr(t.to(torch.float64)).to(self.bucket_edges.dtype)
        idx = (torch.bucketize(lam, self.bucket_edges[1:-1])).clamp(0, len(self.bucket_sum) - 1)
        self.bucket_sum.index_add_(0, idx, losses.to(self.bucket_sum.dtype))
        self.bucket_count.index_add_(0, idx, torch.ones_like(self.bucket_sum[idx]))

    def bucket_names(self) -> list[str]:
        e = self.bucket_edges.tolist()
        return [f"[{e[i]:+.1f},{e[i + 1]:+.1f})" for i in range(len(e) - 1)]

    def on_train_epoch_end(self) -> None:
        total_sum = self.trainer.strategy.reduce(self.bucket_sum, reduce_op="sum")
        total_cnt = self.trainer.strategy.reduce(self.bucket_count, reduce_op="sum")
        for name, s, c in zip(self.bucket_names(), total_sum.tolist(), total_cnt.tolist()):
            if c > 0:
                self.log(f"train/loss_by_log_snr/{name}", s / c, rank_zero_only=True)
        self.bucket_sum.zero_()
        self.bucket_count.zero_()

    def on_before_optimizer_step(self, optimizer) -> None:
        """A finite loss can still give NaN or Inf gradients; the step that would write
        them into the weights (and the EMA, and the next checkpoint) is stopped or skipped."""
        if self._skipped:
            return
        grads = [p.grad for p in self.backbone.parameters() if p.grad is not None]
        if not grads:
            return
        norms = torch._foreach_norm(grads)
        if bool(torch.isfinite(torch.stack(norms)).all()):
            return
        step = self._batches_done()
        if self.hparams.on_nonfinite == "skip":
            raise _SkipStep
        raise NonFiniteLossError(
            f"non-finite gradients at step {self.global_step} (batch {step}) with a finite "
            "loss; nothing was applied and the last checkpoint is kept. Lower the learning "
            "rate, check the data, or set model.on_nonfinite=skip")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().optimizer_step(*args, **kwargs)
        except _SkipStep:
            for p in self.backbone.parameters():
                p.grad = None
            self._skip()
        # here rather than in on_train_batch_end, which runs after the checkpoint callback:
        # a checkpoint must hold the EMA of every step it counts
        if not self._skipped:
            self.ema.update(self.backbone)

    def on_train_end(self) -> None:
        from diffplat.training.checkpoint import nonfinite_tensors

        bad = nonfinite_tensors(dict(self.state_dict()))
        if bad:
            raise NonFiniteLossError(
                f"training ended with {len(bad)} non-finite tensors (e.g. {', '.join(bad[:3])}"
                f"); {int(self.skipped_batches)} batches were skipped. The last checkpoint "
                "written before it is kept")
        skipped = int(self.skipped_batches)
        if skipped and self.trainer.is_global_zero:
            import sys

            print(f"diffplat fit: skipped {skipped} of {self._batches_done()} batches for NaN "
                  "or Inf (model.on_nonfinite=skip; the run fails past "
                  f"model.max_skipped_fraction={self.hparams.get('max_skipped_fraction', 0.1):g})",
                  file=sys.stderr)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        mode = self.hparams.clip
        params = [p for p in self.backbone.parameters() if p.grad is not None]
        if mode == "none" or not params:
            return
        if mode == "norm":
            max_norm = self.hparams.clip_value
        else:
            max_norm = self.clipper.max_norm(self.grad_norms, int(self.grad_norms_filled))
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if mode == "adaptive":
            i = int(self.grad_norms_filled) % self.clipper.size
            self.grad_norms[i] = min(float(norm), max_norm)
            self.grad_norms_filled += 1
        self.log("train/grad_norm", norm, batch_size=1)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.backbone.parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                weight_decay=hp.weight_decay)
        total = hp.decay_steps
        if total is None:
            total = self.trainer.max_steps if self.trainer.max_steps > 0 else int(
                self.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, hp.warmup_steps, total, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- validation: EMA loss, then samples scored with the domain's metrics ---------------
    def _eval_step(self, batch: Any, batch_idx: int, split: str) -> None:
        x0, cond, space = self.domain.unpack(batch)
        n = space.batch_size(x0)
        # stratified t so validation losses are comparable from epoch to epoch
        # (over the trained range [low, high]: (0, 1) unless t_options truncate it)
        low, high = self.loss_fn.time_range
        t = (low + (high - low) * (torch.arange(n, device=self.device) + 0.5) / n
             ).clamp(1e-4, 1 - 1e-4)
        losses, _ = self.loss_fn(self.ema_denoiser, x0, t=t,
                                 generator=self._generator(split, batch_idx),
                                 noise_space=space, **cond)
        self.log(f"{split}/loss", losses.mean(), sync_dist=True, batch_size=n)
        terms = self.domain.likelihood(self.ema_denoiser, batch,
                                       self._generator(split + "/nll", batch_idx))
        for k, v in (terms or {}).items():
            self.log(f"{split}/{k}", v.mean().float(), sync_dist=True, batch_size=n)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _score_samples(self, split: str) -> None:
        hp = self.hparams
        if hp.sample_num <= 0 or self.trainer.sanity_checking:
            return
        if self.ema_denoiser.max_t < 1.0:  # a refiner has nothing to start from here
            return
        if split == "val" and self.current_epoch % max(1, hp.sample_every_n_epochs) != 0:
            return
        if self.global_rank != 0:  # one rank samples and scores; the others wait
            return
        samples, _ = self.generate(hp.sample_num, seed=hp.seed)
        for k, v in self.domain.metrics(samples, split).items():
            if isinstance(v, str):  # a label (molecules: the stability protocol), not logged
                continue
            self.log(f"{split}/{k}", float(v), rank_zero_only=True)
        self._log_preview(samples, split)

    def on_validation_epoch_end(self) -> None:
        self._score_samples("val")

    # -- what a run shows: the model's size, each validation, the end ------------------------
    def on_fit_start(self) -> None:
        n = sum(p.numel() for p in self.backbone.parameters())
        k = torch.get_num_threads()
        threads = ""
        if self.device.type == "cpu":
            from diffplat.runtime import thread_note

            note = thread_note()
            threads = f", {k} thread{'s' * (k > 1)}" + (f" ({note})" if note else "")
        steps = self.trainer.max_steps
        if self.trainer.is_global_zero:
            say(f"model: {type(self.backbone).__name__}, {n / 1e6:.2f}M parameters (and their "
                f"EMA); {self.domain.name} on {self.device.type}{threads}"
                + (f"; {steps} steps" if steps and steps > 0 else ""))

    def on_validation_end(self) -> None:
        """At each validation of ``fit``: one line (step and every ``val/`` metric) and
        ``metrics.json`` beside the checkpoint (``diffplat.progress.write_metrics``)."""
        trainer = self.trainer
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        from diffplat.progress import validation_line, write_metrics

        metrics = _val_metrics(trainer.callback_metrics)
        if not metrics:
            return
        self._last_validation = {"step": int(self.global_step),
                                 "epoch": int(self.current_epoch), "metrics": metrics}
        path = write_metrics(_checkpoint_dir(trainer), self._last_validation)
        self._metrics_path = path
        say(validation_line(self._last_validation))

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        from diffplat.progress import fit_summary

        say(fit_summary(int(self.global_step), getattr(self, "_last_validation", None),
                        getattr(self, "_metrics_path", None),
                        self.trainer.check_val_every_n_epoch))

    def on_test_epoch_end(self) -> None:
        self._score_samples("test")

    def _log_preview(self, samples: Any, split: str) -> None:
        """Save a preview PNG beside the logs; wandb also receives it as an image, and the
        domain's ``media(samples)`` ({name: wandb objects})."""
        logger = self.logger
        if logger is None:
            return
        root = Path(getattr(logger, "log_dir", None) or self.trainer.default_root_dir)
        path = self.domain.preview(samples, root / "previews" /
                                   f"{split}_step{self.global_step:07d}.png")
        if hasattr(logger, "log_image"):
            logger.log_image(key=f"{split}/samples", images=[str(path)], step=self.global_step)
        if type(logger).__name__ == "WandbLogger":
            media = self.domain.media(samples)  # e.g. wandb.Audio clips, wandb.Object3D
            if media:
                logger.log_metrics({f"{split}/{k}": v for k, v in media.items()},
                                   step=self.global_step)

    # -- sampling -----------------------------------------------------------------------------
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

    # -- checkpoints --------------------------------------------------------------------------
    def on_train_start(self) -> None:
        import time

        self._fit_clock = (time.monotonic(), float(self.train_record.get("seconds") or 0.0))

    def _record(self) -> dict[str, Any]:
        import sys
        import time

        from diffplat.api import device_name

        record = dict(self.train_record)
        if self._fit_clock is not None:
            start, before = self._fit_clock
            record["seconds"] = round(before + time.monotonic() - start, 1)
            record["device"] = device_name(self.device)
        record["steps"] = int(self.global_step)
        if "command" not in record and sys.argv and sys.argv[1:2] == ["fit"]:
            record["command"] = "diffplat " + " ".join(sys.argv[1:])
        return record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.train_record = dict((checkpoint.get("diffplat") or {}).get("train_record") or {})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.train_record = self._record()
        extra = {"run_config": self.run_config, "domain": self.domain.name,
                 "log_snr_limit": LOG_SNR_LIMIT,
                 "domain_state": self.domain.sampling_state(),
                 "train_record": self.train_record}
        logger = self.logger if self._trainer is not None else None
        if logger is not None and type(logger).__name__ == "WandbLogger":
            extra["wandb_run_id"] = logger.version  # a resumed run continues this run
        checkpoint["diffplat"] = extra


def _nonfinite_inputs(x0: Any, cond: dict[str, Any]) -> list[str]:
    """Names of the batch's floating-point tensors (x0, conditions) that hold NaN or Inf."""
    from diffplat.training.checkpoint import nonfinite_tensors

    return nonfinite_tensors({"x0": x0, **{f"cond.{k}": v for k, v in cond.items()}})


def _val_metrics(callback_metrics: dict[str, Any]) -> dict[str, float]:
    """The ``val/`` scalars Lightning holds after a validation, as floats."""
    out = {}
    for key, value in callback_metrics.items():
        if key.startswith("val/") and (not hasattr(value, "numel") or value.numel() == 1):
            out[key] = float(value)
    return out


def _checkpoint_dir(trainer: pl.Trainer) -> Path:
    """Where the run's ``last.ckpt`` goes: the Autosave folder, else ModelCheckpoint's,
    else ``<default_root_dir>/checkpoints``."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from diffplat.training.callbacks import Autosave

    for cb in trainer.callbacks:
        if isinstance(cb, Autosave):
            return cb.path(trainer).parent
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            return Path(cb.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


__all__ = ["DiffusionModule", "NonFiniteLossError"]
