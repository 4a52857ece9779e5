"""Per-step overhead of our samplers against diffusers' scheduler loop (CPU, float32).

Both sides run the same trivial model on a (64, 1, 16000) float32 tensor, so the time is
the sampler's bookkeeping and tensor arithmetic plus one multiply per evaluation:

* ours:      ``denoise(x, t) = 0.5 * x`` (x0 prediction), ``samplers.get(name)(...)``;
* diffusers: the same model as the epsilon it implies, ``eps = x * (1 - 0.5 sqrt(ab)) /
  sqrt(1 - ab)`` with the factor looked up per timestep, in the usual loop
  (set_timesteps, scale_model_input, step(...).prev_sample). The scheduler object is built
  once, as in a pipeline; set_timesteps is timed like our grid set-up.

Both use the trailing grid (same steps, same evaluations; Heun 2K - 1 for K steps). Runs
alternate ours / diffusers after one warm-up each; medians over the runs are reported, and
the ratio is the median of the per-run ratios. "model alone" is the time of the model calls
by themselves (the floor neither side can go below).

    python benchmarks/sampler_overhead.py [--steps 50] [--runs 7] [--markdown docs/core.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import (  # noqa: E402
    COMMON_OPTIONS,
    PEERS,
    machine_info,
    make_peer,
    write_marked,
)
from diffplat import samplers, schedules  # noqa: E402


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process), for telling
    whether other processes competed for the cores during the measurement."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


#: the multistep samplers against their diffusers schedulers at the same order:
#: our name -> (diffusers class, its options, our options)
MULTISTEP_PEERS = {
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"},
              {"order": 3}),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", {"solver_order": 3}, {}),
    "deis": ("DEISMultistepScheduler", {"solver_order": 3}, {"order": 3}),
}


def pairs():
    """(our name, diffusers class, scheduler object, our options) of every timed pair."""
    import diffusers

    for name, peer_name in PEERS.items():
        yield name, peer_name, make_peer(name), {}
    for name, (peer_name, peer_opts, ours) in MULTISTEP_PEERS.items():
        yield name, peer_name, getattr(diffusers, peer_name)(**COMMON_OPTIONS, **peer_opts), ours


def time_ours(name: str, noise: torch.Tensor, schedule, steps: int, **options) -> float:
    def denoise(x, t):
        return x * 0.5

    start = time.perf_counter()
    samplers.get(name)(denoise, noise, schedule, steps, spacing="trailing", **options)
    return time.perf_counter() - start


def time_peer(sched, noise: torch.Tensor, steps: int, factor: dict[int, float]) -> float:
    def model(x_in, t):
        return x_in * factor[int(t)]

    start = time.perf_counter()
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        x = sched.step(model(x_in, t), t, x).prev_sample
    return time.perf_counter() - start


def time_model(noise: torch.Tensor, nfe: int) -> float:
    start = time.perf_counter()
    for _ in range(nfe):
        noise * 0.5
    return time.perf_counter() - start


def measure(steps: int, runs: int, shape: tuple[int, ...]) -> list[dict]:
    schedule = schedules.get("linear")
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    rows = []
    for name, peer_name, sched, ours_opts in pairs():
        ab = sched.alphas_cumprod.double()
        factor = {i: float((1 - 0.5 * ab[i].sqrt()) / (1 - ab[i]).sqrt()) for i in range(len(ab))}
        nfe = samplers.nfe_for_steps(name, steps)
        time_ours(name, noise, schedule, steps, **ours_opts)  # warm-up
        time_peer(sched, noise, steps, factor)
        ours, peer, unchecked, ratios = [], [], [], []
        for _ in range(runs):
            a = time_ours(name, noise, schedule, steps, **ours_opts)
            b = time_peer(sched, noise, steps, factor)
            c = time_ours(name, noise, schedule, steps, check_finite=False, **ours_opts)
            ours.append(a)
            peer.append(b)
            unchecked.append(c)
            ratios.append(a / b)
        model = statistics.median(time_model(noise, nfe) for _ in range(runs))
        rows.append({"name": name, "peer": peer_name, "steps": steps, "nfe": nfe,
                     "ours": statistics.median(ours) / steps * 1e3,
                     "peer_ms": statistics.median(peer) / steps * 1e3,
                     "unchecked": statistics.median(unchecked) / steps * 1e3,
                     "model": model / steps * 1e3,
                     "ratio": statistics.median(ratios)})
        print(f"{name:9s} vs {peer_name:28s} ours {rows[-1]['ours']:7.3f} ms/step  "
              f"diffusers {rows[-1]['peer_ms']:7.3f} ms/step  ratio {rows[-1]['ratio']:.3f}  "
              f"(ours unchecked {rows[-1]['unchecked']:.3f}, model alone "
              f"{rows[-1]['model']:.3f})", flush=True)
    return rows


def markdown(rows: list[dict], info: dict, args) -> str:
    shape = "x".join(str(s) for s in args.shape)
    lines = [
        "### Sampler overhead against diffusers",
        "",
        f"`python benchmarks/sampler_overhead.py --steps {args.steps} --runs {args.runs}` "
        f"on {info['date']}: CPU {info['cpu']}, {info['threads']} torch threads, "
        f"load average {info['load']} at the start, other processes using "
        f"{info['other']} of the CPU time during the measurement, "
        f"torch {info['torch']}, diffusers {info['diffusers']}, Python {info['python']}.",
        "",
        f"Trivial model (x0 = 0.5 x, or its epsilon for diffusers) on a {shape} float32 "
        f"tensor, {args.steps} steps on the trailing grid, median of {args.runs} alternating "
        "runs after a warm-up. ms/step is wall time over steps (Heun makes 2 evaluations a "
        "step); the ratio is the median of per-run ratios ours / diffusers. \"unchecked\" is "
        "ours with `check_finite=False` (no NaN/Inf reduction after each evaluation); "
        "\"model alone\" is the multiplies by themselves.",
        "",
        "| ours | diffusers | NFE | ours ms/step | diffusers ms/step | ours / diffusers "
        "| ours unchecked ms/step | model alone ms/step |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['peer']} | {r['nfe']} | {r['ours']:.2f} | "
                     f"{r['peer_ms']:.2f} | {r['ratio']:.2f} | {r['unchecked']:.2f} | "
                     f"{r['model']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 1, 16000])
    parser.add_argument("--threads", type=int, default=_threads())
    parser.add_argument("--markdown", help="write the table between the overhead markers")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info()
    print(f"{info['date']}  torch {info['torch']}  diffusers {info['diffusers']}  "
          f"CPU {info['cpu']}  threads {info['threads']}  load {info['load']}  "
          f"shape {tuple(args.shape)}  steps {args.steps}  runs {args.runs}", flush=True)
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    rows = measure(args.steps, args.runs, tuple(args.shape))
    cpu1, wall = _cpu_seconds(), time.perf_counter() - wall0
    if cpu0 is not None and cpu1 is not None:
        other = ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / (wall * (os.cpu_count() or 1))
        info["other"] = f"{max(other, 0.0):.0%}"
    else:
        info["other"] = "unknown"
    print(f"measured in {wall:.0f} s; other processes used {info['other']} of the machine's "
          "CPU time meanwhile (numbers are only meaningful near 0%)")
    if args.markdown:
        write_marked(args.markdown, "overhead", markdown(rows, info, args))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
