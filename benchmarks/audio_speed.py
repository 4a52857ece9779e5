"""Training throughput and sampling real-time factor of the waveform U-Net.

    python benchmarks/audio_speed.py                                   # configs/audio/digits.yaml
    python benchmarks/audio_speed.py -c configs/audio/digits-tiny.yaml --train-batches 5 \\
        --sample-num 16

The model is built from the config's ``model`` section (backbone, schedule, target, domain
format), so the figures are those of that config. Training: full steps (loss forward,
backward, AdamW, EMA) on random clips of the configured length (the speed does not depend on
the content, and no data is needed). Sampling: ``generate`` with the given sampler and NFE,
all clips in one batch (or --sample-batch); the real-time factor is seconds of audio
produced per second of wall time. Goal of issue 6: 1 s of 16 kHz audio at 50 NFE at least
200x faster than real time on one H100/H200, batched.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import yaml


def build(config: str, device: torch.device):
    from diffplat.training.checkpoint import build_module

    with open(config) as f:
        model_cfg = yaml.safe_load(f)["model"]
    model_cfg["domain"]["init_args"].pop("classifier", None)
    return build_module(model_cfg).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_speed(module, args, device) -> float:
    dom, hp = module.domain, module.hparams
    bs = args.batch_size or hp.batch_size
    opt = torch.optim.AdamW(module.backbone.parameters(), lr=1e-4)
    if args.compile:
        object.__setattr__(module.denoiser, "compiled", torch.compile(module.backbone))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        x0 = 0.1 * torch.randn(bs, 1, dom.length, device=device, generator=gen)
        cond = {"labels": torch.randint(0, 11, (bs,), device=device, generator=gen)} \
            if dom.conditional else {}
        with autocast:
            losses, _ = module.loss_fn(module.denoiser, x0, generator=gen, **cond)
        losses.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        module.ema.update(module.backbone)

    for _ in range(args.warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.train_batches):
        step()
    _sync(device)
    return args.train_batches * bs / (time.perf_counter() - t0)


@torch.no_grad()
def sample_speed(module, args, device) -> tuple[float, float]:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    with autocast:
        module.generate(min(4, args.sample_num), steps=2, seed=1)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        clips, _ = module.generate(args.sample_num, sampler=args.sampler, steps=args.steps,
                                   seed=0, batch_size=args.sample_batch)
        _sync(device)
    seconds = time.perf_counter() - t0
    audio_seconds = len(clips) * clips.audio.shape[-1] / clips.sample_rate
    return audio_seconds / seconds, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", default="configs/audio/digits.yaml")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    p.add_argument("--train-batches", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (training)")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (= NFE for dpmpp_2m)")
    p.add_argument("--sample-num", type=int, default=256)
    p.add_argument("--sample-batch", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    from diffplat.runtime import flush_subnormals

    flush_subnormals()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU {platform.processor() or platform.machine()}, " \
               f"{torch.get_num_threads()} threads"
    module = build(args.config, device)
    dom = module.domain
    params = sum(q.numel() for q in module.backbone.parameters())
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {name}  torch {torch.__version__}  "
          f"{args.config}: UNet1D {params / 1e6:.2f}M params, {dom.seconds} s at "
          f"{dom.sample_rate} Hz")
    sps = train_speed(module, args, device)
    print(f"training: {sps:.1f} clips/s (batch {args.batch_size or module.hparams.batch_size}, "
          f"bf16={args.bf16}, compile={args.compile}, {args.train_batches} steps)")
    rtf, seconds = sample_speed(module, args, device)
    print(f"sampling: {rtf:.1f}x real time ({args.sample_num} clips, {args.sampler}, "
          f"{args.steps} steps, batch {args.sample_batch or args.sample_num}, "
          f"{seconds:.1f} s, bf16={args.bf16})")


if __name__ == "__main__":
    main()
