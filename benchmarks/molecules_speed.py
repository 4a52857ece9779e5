"""Training and sampling throughput of the QM9 model, in molecules per second.

    python benchmarks/molecules_speed.py                     # EDM's size (9 x 256), auto device
    python benchmarks/molecules_speed.py --hidden 64 --layers 4 --train-batches 64 --sample-num 256

Training: full steps (forward, backward, AdamW, EMA) through DiffusionModule.training_step
on real QM9 batches from the cache (``diffplat data prepare qm9``). Sampling: ``generate``
with a core sampler at the given NFE. Prints the device, settings and figures; the anchor is
EDM's reference code on one H200: 1,258 molecules/s training at batch 64 (fp32), 100
molecules with 1000 steps in 16 to 24 s.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def build(args, device):
    from diffplat.training.checkpoint import build_module

    cfg = {
        "domain": {"class_path": "domains.molecules.domain.MoleculeDomain",
                   "init_args": {"data_path": args.data, "max_eval": 100}},
        "backbone": {"class_path": "domains.molecules.egnn.EGNNBackbone",
                     "init_args": {"num_features": 6, "hidden": args.hidden,
                                   "layers": args.layers}},
        "schedule": "polynomial", "target": "eps", "batch_size": args.batch_size,
        "sampler": args.sampler, "sample_steps": args.steps,
    }
    module = build_module(cfg).to(device)
    module.domain.setup("fit")
    return module


def train_speed(module, args, device) -> float:
    loader = torch.utils.data.DataLoader(module.domain.train_dataset(),
                                         batch_size=args.batch_size, shuffle=True,
                                         collate_fn=module.domain.collate, drop_last=True)
    opt = torch.optim.AdamW(module.backbone.parameters(), lr=1e-4)
    net = torch.compile(module.backbone) if args.compile else None
    if net is not None:
        object.__setattr__(module.denoiser, "compiled", net)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    it = iter(loader)

    def step():
        batch = next(it)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        x0, cond, space = module.domain.unpack(batch)
        with autocast:
            losses, _ = module.loss_fn(module.denoiser, x0, noise_space=space, **cond)
        losses.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        module.ema.update(module.backbone)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.train_batches):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.train_batches * args.batch_size / (time.perf_counter() - t0)


@torch.no_grad()
def sample_speed(module, args, device) -> tuple[float, dict]:
    module.generate(min(64, args.sample_num), steps=2, seed=1)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    samples, stats = module.generate(args.sample_num, sampler=args.sampler, steps=args.steps,
                                     seed=0, batch_size=args.sample_batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    assert len(samples) == args.sample_num
    return args.sample_num / seconds, {"seconds": seconds, "nfe": stats["nfe"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/qm9/qm9.npz")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-batches", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in training")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sample-num", type=int, default=1000)
    p.add_argument("--sample-batch", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    from diffplat.runtime import flush_subnormals

    flush_subnormals()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name()
    else:
        cpu = platform.processor() or platform.machine()
        name = f"CPU {cpu}, {torch.get_num_threads()} threads"
    module = build(args, device)
    params = sum(p.numel() for p in module.backbone.parameters())
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {name}  torch {torch.__version__}  "
          f"EGNN {args.layers}x{args.hidden} ({params / 1e6:.2f}M params)")
    tps = train_speed(module, args, device)
    print(f"training: {tps:.1f} molecules/s (batch {args.batch_size}, bf16={args.bf16}, "
          f"compile={args.compile}, {args.train_batches} steps)")
    sps, info = sample_speed(module, args, device)
    print(f"sampling: {sps:.1f} molecules/s ({args.sample_num} molecules, {args.sampler}, "
          f"{info['nfe']} NFE per batch, {info['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
