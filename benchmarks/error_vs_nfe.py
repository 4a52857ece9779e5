"""Error against NFE on the Gaussian mixture: our samplers and diffusers' schedulers.

The set-up of tests/test_peer_parity.py (see benchmarks/peers.py), over a range of NFE:
2-D default mixture, exact denoiser, DDPM linear schedule, float64, diffusers with the
trailing grid. For each NFE it runs our ddim / euler / heun / dpmpp_2m on our default grid
(Karras, rho = 7) and on diffusers' trailing grid, and the four diffusers schedulers, plus
our adaptive Dormand-Prince solver at a few tolerances (its NFE is whatever it needs).

Reported per run: the RMS distance to the exact probability-flow ODE endpoint from the
run's own start (scipy DOP853, rtol = atol = 1e-10) and the unbiased MMD^2 to the exact
mixture, whose spread for exact samples of the same size is given as the floor.

    python benchmarks/error_vs_nfe.py [--markdown docs/core.md] [--plot docs/img/error_vs_nfe.png]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import (  # noqa: E402
    PEERS,
    ReferenceCache,
    end_level,
    evaluate,
    linear_setup,
    machine_info,
    run_ours,
    run_peer,
    write_marked,
)
from domains.toy.metrics import mmd2_to_mixture  # noqa: E402

#: (row label, how to run it); the label says which grid
VARIANTS = [
    ("ours, default grid", {}),
    ("ours, trailing grid", {"spacing": "trailing"}),
    ("diffusers", None),
]


def measure(nfes: list[int], tolerances: list[float], n: int, seed: int) -> dict:
    sched, mix, noise = linear_setup(n, seed)
    refs = ReferenceCache(mix, end_level(sched))
    fixed: dict[tuple[str, str, int], dict] = {}
    for name in PEERS:
        for nfe in nfes:
            for label, options in VARIANTS:
                if options is None:
                    run = run_peer(name, noise, mix, nfe)
                else:
                    run = run_ours(name, noise, sched, mix, nfe, **options)
                res = evaluate(run, refs, mix)
                fixed[name, label, nfe] = res
                print(f"{name:9s} {label:20s} NFE {res['nfe']:4d}  ODE error "
                      f"{res['ode_err']:.4e}  MMD^2 {res['mmd2']:+.3e}", flush=True)
    adaptive = []
    for tol in tolerances:
        res = evaluate(run_ours("adaptive", noise, sched, mix, rtol=tol, atol=tol), refs, mix)
        adaptive.append({"tol": tol, **res})
        print(f"adaptive  tol {tol:.0e}  NFE {res['nfe']:4d}  ODE error {res['ode_err']:.4e}  "
              f"MMD^2 {res['mmd2']:+.3e}", flush=True)
    exact = [mmd2_to_mixture(mix.sample(n, torch.Generator().manual_seed(1000 + s)), mix)
             for s in range(8)]
    floor = {"mean": statistics.mean(exact), "std": statistics.stdev(exact)}
    return {"fixed": fixed, "adaptive": adaptive, "floor": floor}


def markdown(res: dict, nfes: list[int], info: dict, args, elapsed: float) -> str:
    fixed, floor = res["fixed"], res["floor"]
    heun_nfes = ", ".join(str(fixed["heun", "diffusers", n]["nfe"]) for n in nfes)
    cmd = (f"python benchmarks/error_vs_nfe.py --samples {args.samples} --seed {args.seed} "
           f"--nfe {' '.join(map(str, nfes))} "
           f"--tolerances {' '.join(f'{t:g}' for t in args.tolerances)}")
    lines = [
        "### Error against NFE on the Gaussian mixture",
        "",
        f"`{cmd}` on {info['date']} ({elapsed:.0f} s; CPU {info['cpu']}, {info['threads']} "
        f"torch threads, torch {info['torch']}, diffusers {info['diffusers']}).",
        "",
        f"2-D default mixture, exact denoiser, DDPM linear schedule, {args.samples} samples in "
        "float64. ODE error: RMS distance to the exact probability-flow ODE endpoint from each "
        "run's own start (scipy DOP853, rtol = atol = 1e-10). Ours on our default grid (Karras, "
        "rho = 7, noise levels 80 to 0.01) and on diffusers' trailing grid; diffusers "
        "0.42 schedulers with `timestep_spacing=\"trailing\"`, DDPM betas, `clip_sample=False` "
        "for DDIM, DPM-Solver++ 2M. Heun spends 2K - 1 evaluations on K steps, so it runs at "
        f"the largest such NFE not above the column's ({heun_nfes}), on both sides. **Bold**: "
        "the smaller error of ours (default grid) and diffusers.",
        "",
        "ODE error (lower is better):",
        "",
        "| sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---:|" * len(nfes),
    ]
    for name in PEERS:
        for label, _ in VARIANTS:
            cells = []
            for nfe in nfes:
                err = fixed[name, label, nfe]["ode_err"]
                cell = f"{err:.3g}"
                other = {"ours, default grid": "diffusers",
                         "diffusers": "ours, default grid"}.get(label)
                if other is not None and err < fixed[name, other, nfe]["ode_err"]:
                    cell = f"**{cell}**"
                cells.append(cell)
            who = name if label != "diffusers" else PEERS[name]
            grid = label.split(", ")[1] if label != "diffusers" else "trailing"
            lines.append(f"| {who} | {grid} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"MMD^2 to the exact mixture (unbiased, bandwidth 1; exact samples of the same size: "
        f"{floor['mean']:+.1e} +- {floor['std']:.1e}):",
        "",
        "| sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---:|" * len(nfes),
    ]
    for name in PEERS:
        for label, _ in VARIANTS:
            who = name if label != "diffusers" else PEERS[name]
            grid = label.split(", ")[1] if label != "diffusers" else "trailing"
            cells = [f"{fixed[name, label, nfe]['mmd2']:+.1e}" for nfe in nfes]
            lines.append(f"| {who} | {grid} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Our adaptive Dormand-Prince 5(4) solver (rtol = atol = tolerance; from noise level 80):",
        "",
        "| tolerance | NFE | ODE error | MMD^2 |",
        "|---:|---:|---:|---:|",
    ]
    for row in res["adaptive"]:
        lines.append(f"| {row['tol']:g} | {row['nfe']} | {row['ode_err']:.3g} | "
                     f"{row['mmd2']:+.1e} |")
    if args.plot:
        lines += ["", f"![error against NFE]({_relative(args.plot, args.markdown)})"]
    return "\n".join(lines)


def _relative(target: str, markdown_file: str | None) -> str:
    import os

    if markdown_file is None:
        return target
    return os.path.relpath(Path(target).resolve(), Path(markdown_file).resolve().parent)


def plot(res: dict, nfes: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fixed, floor = res["fixed"], res["floor"]
    colors = dict(zip(PEERS, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    styles = {"ours, default grid": dict(ls="-", marker="o"),
              "ours, trailing grid": dict(ls=":", marker="s", mfc="none"),
              "diffusers": dict(ls="--", marker="x")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.2))
    for name in PEERS:
        for label, _ in VARIANTS:
            xs = [fixed[name, label, n]["nfe"] for n in nfes]
            who = name if label != "diffusers" else PEERS[name]
            kw = dict(color=colors[name], label=f"{who} ({label.split(', ')[-1]})",
                      **styles[label])
            axes[0].loglog(xs, [fixed[name, label, n]["ode_err"] for n in nfes], **kw)
            axes[1].plot(xs, [fixed[name, label, n]["mmd2"] for n in nfes], **kw)
    ad = res["adaptive"]
    kw = dict(color="black", ls="none", marker="*", ms=10, label="adaptive (ours, tolerances "
              + ", ".join(f"{r['tol']:g}" for r in ad) + ")")
    axes[0].loglog([r["nfe"] for r in ad], [r["ode_err"] for r in ad], **kw)
    axes[1].plot([r["nfe"] for r in ad], [r["mmd2"] for r in ad], **kw)
    axes[0].set(xlabel="NFE", ylabel="RMS distance to exact ODE endpoint",
                title="ODE error (DDPM linear schedule, 2-D mixture)")
    axes[1].axhspan(floor["mean"] - 2 * floor["std"], floor["mean"] + 2 * floor["std"],
                    color="gray", alpha=0.25, label="MMD^2 of exact samples (+-2 std)")
    axes[1].set_xscale("log")
    axes[1].set_yscale("symlog", linthresh=max(floor["std"], 1e-6))
    axes[1].set(xlabel="NFE", ylabel="unbiased MMD^2 to the mixture", title="MMD^2")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.035), ncol=4,
               fontsize=7.5, frameon=False)
    fig.text(0.5, 0.005, "ddim and euler coincide (DDIM is Euler in the noise-level frame), "
             "and so do ours on the trailing grid and diffusers", ha="center", fontsize=7.5)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4, 1e-5])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="write the tables between the error-vs-nfe markers")
    parser.add_argument("--plot", default="docs/img/error_vs_nfe.png",
                        help="PNG path ('' for none)")
    args = parser.parse_args(argv)
    info = machine_info()
    print(f"{info['date']}  torch {info['torch']}  diffusers {info['diffusers']}  "
          f"CPU {info['cpu']}  threads {info['threads']}", flush=True)
    start = time.perf_counter()
    res = measure(args.nfe, args.tolerances, args.samples, args.seed)
    elapsed = time.perf_counter() - start
    if args.plot:
        plot(res, args.nfe, args.plot)
        print(f"wrote {args.plot}")
    if args.markdown:
        write_marked(args.markdown, "error-vs-nfe", markdown(res, args.nfe, info, args, elapsed))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
