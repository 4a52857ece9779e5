"""DiffusionModule: the one LightningModule every domain trains with.

It wraps a ``diffplat.model.DiffusionModel`` (``self.model``: the domain, backbone,
denoisers, EMA) for training only: the data loaders, the loss and its log-SNR buckets, the
optimizer and clipping, the non-finite policy, the EMA update, the run's printed lines and
what a checkpoint stores beside the weights. Sampling and scoring at validation is a
callback (``diffplat.training.validation.SampleScoring``, brought by ``configure_callbacks``).

Checkpoints keep the keys they always had: the model's entries appear without the
``model.`` prefix (``backbone.*``, ``ema.*``), beside the training's own buffers.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from diffplat.backbone import Backbone
from diffplat.domain import Domain
from diffplat.losses import DiffusionLoss
from diffplat.model import DiffusionModel
from diffplat.schedules import LOG_SNR_LIMIT
from diffplat.store.cards import device_name
from diffplat.store.checkpoint import TRAINING_STATE
from diffplat.store.config import check_arguments
from diffplat.training.data import StepIndexedLoader
from diffplat.training.nonfinite import (
    NonFiniteLossError,
    NonFinitePolicy,
    _nonfinite_inputs,
    _SkipStep,
)
from diffplat.training.optim import AdaptiveClipper, warmup_cosine
from diffplat.training.report import RunReport


def _step_seed(seed: int, step: int, rank: int, salt: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}/{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 62) - 1)


class DiffusionModule(NonFinitePolicy, RunReport, pl.LightningModule):
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
        check_arguments(schedule=schedule, coupling=coupling, clip=clip,
                        on_nonfinite=on_nonfinite, max_skipped_fraction=max_skipped_fraction,
                        sampler=sampler)
        with warnings.catch_warnings():
            # built by hand the backbone is a module, not a configuration; Lightning warns
            # about it, and it is dropped from hparams just below
            warnings.filterwarnings("ignore", message="Attribute 'backbone' is an instance of "
                                                      "`nn.Module`")
            self.save_hyperparameters()
        for key in ("domain", "backbone"):
            # inside LightningCLI these are their class_path/init_args configurations; built
            # by hand they are objects, which a checkpoint cannot hold
            if not isinstance(self.hparams.get(key), dict):
                self.hparams.pop(key, None)
        self.loss_fn = DiffusionLoss(weighting, t_sampler, weighting_options, t_options,
                                     self_condition=self_condition, coupling=coupling)
        #: the model itself (a truncated t-range, ``t_options: {high: ...}``: a refiner)
        self.model = DiffusionModel(domain, backbone, schedule, schedule_options, target,
                                    sigma_data, max_t=self.loss_fn.time_range[1],
                                    self_condition=self_condition, ema_decay=ema_decay,
                                    hparams=self.hparams)
        self.clipper = AdaptiveClipper()
        self.register_buffer("grad_norms", torch.zeros(self.clipper.size))
        self.register_buffer("grad_norms_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("skipped_batches", torch.zeros((), dtype=torch.long))
        lo, hi = self.schedule.log_snr_range()
        self.register_buffer("bucket_edges", torch.linspace(lo, hi, log_snr_buckets + 1),
                             persistent=False)
        self.register_buffer("bucket_sum", torch.zeros(log_snr_buckets), persistent=False)
        self.register_buffer("bucket_count", torch.zeros(log_snr_buckets), persistent=False)
        self.register_state_dict_post_hook(_unprefix_model)
        self.register_load_state_dict_pre_hook(_prefix_model)
        #: filled by the CLI: the whole run configuration, stored in every checkpoint
        self.run_config: dict[str, Any] | None = None
        #: how the weights were made: steps, wall seconds of training (over resumes),
        #: device, first command; stored in checkpoints and exports (model cards)
        self.train_record: dict[str, Any] = {}
        self._fit_clock: tuple[float, float] | None = None
        self._skipped = False

    # -- the model's parts, as before the model was its own module ------------------------
    @property
    def domain(self) -> Domain:
        return self.model.domain

    @property
    def backbone(self) -> torch.nn.Module:
        return self.model.backbone

    @property
    def schedule(self):
        return self.model.schedule

    @property
    def ema(self):
        return self.model.ema

    @property
    def denoiser(self):
        return self.model.denoiser

    @property
    def ema_denoiser(self):
        return self.model.ema_denoiser

    def generate(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """``DiffusionModel.generate``: samples with the EMA weights."""
        return self.model.generate(*args, **kwargs)

    def configure_callbacks(self):
        from diffplat.training.validation import SampleScoring

        return [SampleScoring()]

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

    # -- checkpoints --------------------------------------------------------------------------
    def on_train_start(self) -> None:
        import time

        self._fit_clock = (time.monotonic(), float(self.train_record.get("seconds") or 0.0))

    def _record(self) -> dict[str, Any]:
        import sys
        import time

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


def _unprefix_model(module, state: dict[str, Any], prefix: str, metadata) -> None:
    """state_dict post-hook: ``model.backbone.*`` -> ``backbone.*`` (the checkpoint format
    of every diffplat version), order kept."""
    head = prefix + "model."
    items = list(state.items())
    state.clear()
    for key, value in items:
        state[prefix + key[len(head):] if key.startswith(head) else key] = value
    meta = getattr(state, "_metadata", None)
    if meta is not None:
        entries = list(meta.items())
        meta.clear()
        for key, value in entries:
            if key != head[:-1]:
                meta[prefix + key[len(head):] if key.startswith(head) else key] = value


def _prefix_model(module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: a checkpoint's ``backbone.*`` and ``ema.*`` go to the
    model (``model.backbone.*``); the training's own entries stay."""
    names = {name for name, _ in module.model.named_children()}
    for key in [k for k in state if k.startswith(prefix)]:
        if key[len(prefix):].split(".", 1)[0] in names:
            state[prefix + "model." + key[len(prefix):]] = state.pop(key)


assert set(TRAINING_STATE) == {"grad_norms", "grad_norms_filled", "skipped_batches"}

__all__ = ["DiffusionModule", "NonFiniteLossError"]
