"""Few-step accuracy against NFE: our samplers against diffusers' and k-diffusion's, each
library at its best configuration per NFE, on exact-denoiser Gaussian mixtures.

Problems (benchmarks/few_step.py): VP (DDPM linear betas) and VE (EDM sigmas, 0.002 to 80),
each on a 2-D mixture of 8 components (std 0.18 to 0.42) and a 16-D mixture of 12 narrow
components (std 0.03 to 0.07). Every library sweeps its options at NFE 5, 10 and 20:

* ours: unipc (order 1-3, bh1/bh2), dpmpp_3m (Taylor and the reference code's weights),
  dpmpp_2m, deis (order 2-4, log-rho and rho), ipndm (order 2-4), heun, euler; spacings
  karras, log_snr, polynomial, uniform_t (VP) and trailing, leading (VP); top level 80,
  40, 20 or the schedule's own (VP, 157); denoise at the last step or not; lower-order
  final steps or not; and for our three best samplers per NFE (by the screened ODE error) a
  step schedule fitted with diffplat.samplers.tuning on 1000 other start noises;
* diffusers: UniPCMultistepScheduler (order 1-3, bh1/bh2), DEISMultistepScheduler (order
  1-3), DPMSolverMultistepScheduler (order 1-3; dpmsolver++, sde-dpmsolver++, dpmsolver;
  midpoint/heun), EDMDPMSolverMultistepScheduler (VE; karras/exponential), with
  timestep_spacing linspace/leading/trailing or Karras sigmas, final_sigmas_type zero or
  sigma_min;
* k-diffusion (k_diffusion.sampling): euler, heun, lms (order 1-4), dpmpp_2m,
  dpmpp_2m_sde (eta 0; midpoint/heun), dpmpp_3m_sde (eta 0 and 1), dpm_2,
  dpmpp_2s_ancestral (eta 0), dpm_fast; sigmas karras (rho 7) over the table's range and
  over [0.002, 80], exponential, the VP grid (VP), and our karras/log_snr/polynomial grids.

Every configuration is first screened on the first ``--screen`` samples; the ``--top``
best per library and metric are rerun on all samples, and only those full runs count. Best
per library = smallest ODE-endpoint error among its deterministic configurations, and
separately smallest sliced W2 among all (stochastic ones too). The ratio is ours / the best
peer's; k-diffusion is also run on our grids, reported apart (solver against grid). The
raw results (screening included) go to a JSON file (``--json``), from which ``--auto``
picks the configuration of ``--sampler auto`` and the tables are redrawn without rerunning.

    python benchmarks/error_vs_nfe.py [--samples 20000] [--markdown docs/core.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.few_step import (  # noqa: E402
    ALL_SETTINGS,
    MIXTURES,
    SETTINGS,
    Problem,
    k_steps,
    run_diffusers,
    run_kdiff,
    run_ours,
)
from benchmarks.peers import machine_info, write_marked  # noqa: E402
from diffplat.samplers.grids import DISCRETE, level_range, noise_levels  # noqa: E402

LIBRARIES = ("diffplat", "diffusers", "k-diffusion")  # the best peer is one of the last two
MULTISTEP = ("unipc", "dpmpp_3m", "deis", "ipndm")


def our_samplers() -> list[tuple[str, dict]]:
    out = [("unipc", {"order": o, "variant": v}) for o in (1, 2, 3) for v in ("bh1", "bh2")]
    out += [("dpmpp_3m", {"coefficients": c}) for c in ("taylor", "dpm_solver")]
    out += [("dpmpp_2m", {})]
    out += [("deis", {"order": o, "variable": v}) for o in (2, 3, 4) for v in ("log_rho", "rho")]
    out += [("ipndm", {"order": o}) for o in (2, 3, 4)]
    return out + [("heun", {}), ("euler", {})]


def our_configs(setting: str) -> list[tuple[str, dict]]:
    spacings = ["karras", "log_snr", "polynomial"]
    if setting in ("vp", "cosine"):
        spacings += ["uniform_t", "trailing", "leading"]
    configs = []
    for (name, base), spacing in itertools.product(our_samplers(), spacings):
        # the top level: 80 (default), the schedule's own (VP: 157) and two lower starts,
        # which is what diffusers' "leading" spacing amounts to
        tops = [None] if spacing in DISCRETE else [None, 40.0, 20.0] if setting == "ve" \
            else [None, math.inf, 40.0, 20.0]
        finals = (True,) if spacing == "leading" else (True, False)  # leading ends at step 0
        for top, final in itertools.product(tops, finals):
            for lof in (True, False) if name in MULTISTEP else (None,):
                opts = {**base, "spacing": spacing, "denoise_final": final}
                if top is not None:
                    opts["level_max"] = top
                if lof is not None:
                    opts["lower_order_final"] = lof
                configs.append((name, opts))
    return configs


def diffusers_configs(setting: str) -> list[tuple[str, dict]]:
    grids = [{"timestep_spacing": s} for s in ("linspace", "leading", "trailing")]
    grids.append({"use_karras_sigmas": True})
    out = []
    for order, bh, grid, final in itertools.product((1, 2, 3), ("bh1", "bh2"), grids,
                                                    ("zero", "sigma_min")):
        out.append(("UniPCMultistepScheduler", {"solver_order": order, "solver_type": bh,
                                                "final_sigmas_type": final, **grid}))
    for order, grid in itertools.product((1, 2, 3), grids):
        out.append(("DEISMultistepScheduler", {"solver_order": order, **grid}))
    for order, alg, st, grid in itertools.product(
            (1, 2, 3), ("dpmsolver++", "sde-dpmsolver++", "dpmsolver"), ("midpoint", "heun"),
            grids):
        for final in ("zero", "sigma_min") if alg != "dpmsolver" else ("sigma_min",):
            out.append(("DPMSolverMultistepScheduler",
                        {"solver_order": order, "algorithm_type": alg, "solver_type": st,
                         "final_sigmas_type": final, **grid}))
    if setting == "ve":
        for order, alg, st, sch, final in itertools.product(
                (1, 2, 3), ("dpmsolver++", "sde-dpmsolver++"), ("midpoint", "heun"),
                ("karras", "exponential"), ("zero", "sigma_min")):
            out.append(("EDMDPMSolverMultistepScheduler",
                        {"solver_order": order, "algorithm_type": alg, "solver_type": st,
                         "sigma_schedule": sch, "final_sigmas_type": final,
                         "prediction_type": "epsilon"}))
    return out


K_SAMPLERS = [("sample_euler", {}), ("sample_heun", {}), ("sample_dpm_2", {}),
              *[("sample_lms", {"order": o}) for o in (1, 2, 3, 4)],
              ("sample_dpmpp_2m", {}),
              *[("sample_dpmpp_2m_sde", {"eta": 0.0, "solver_type": s})
                for s in ("midpoint", "heun")],
              ("sample_dpmpp_3m_sde", {"eta": 0.0}), ("sample_dpmpp_3m_sde", {"eta": 1.0}),
              ("sample_dpmpp_2s_ancestral", {"eta": 0.0}), ("sample_dpm_fast", {})]


def k_grids(pb: Problem, steps: int) -> list[tuple[str, torch.Tensor]]:
    ks = __import__("benchmarks.few_step", fromlist=["k_sampling"]).k_sampling()
    lo, hi = level_range(pb.schedule, level_min=0.0, level_max=math.inf)
    grids = [("karras (table range)", ks.get_sigmas_karras(steps, lo, hi, 7.0).double()),
             ("exponential (table range)", ks.get_sigmas_exponential(steps, lo, hi).double())]
    if pb.setting in ("vp", "cosine"):
        grids.append(("karras [0.01, 80]", ks.get_sigmas_karras(steps, lo, 80.0, 7.0).double()))
        grids.append(("vp", ks.get_sigmas_vp(steps).double()))
    for spacing in ("karras", "log_snr", "polynomial"):
        grids.append((f"ours: {spacing}", noise_levels(pb.schedule, steps, spacing)))
    return grids


def describe(opts: dict) -> str:
    return ", ".join(f"{k}={'inf' if v == math.inf else v}" for k, v in opts.items())


def candidates(pb: Problem, nfe: int) -> list[tuple[str, str, object]]:
    """Every (library, label, run) of the sweep at one NFE."""
    out = []
    for name, opts in our_configs(pb.setting):
        out.append(("diffplat", f"{name}: {describe(opts)}",
                    lambda pb, name=name, opts=opts: run_ours(pb, name, nfe, **opts)))
    for cls, opts in diffusers_configs(pb.setting):
        out.append(("diffusers", f"{cls}: {describe(opts)}",
                    lambda pb, cls=cls, opts=opts: run_diffusers(pb, cls, nfe, **opts)))
    for name, opts in K_SAMPLERS:
        steps = k_steps(name, nfe)
        for glabel, grid in k_grids(pb, steps):
            if name == "sample_dpm_fast" and not glabel.startswith("karras (table"):
                continue  # dpm_fast makes its own grid from the two end levels
            lib = "k-diffusion on our grids" if glabel.startswith("ours") else "k-diffusion"
            out.append((lib, f"{name}: {describe(opts)}, sigmas {glabel}",
                        lambda pb, name=name, opts=opts, grid=grid:
                        run_kdiff(pb, name, nfe, grid, **opts)))
    return out


def _evaluate(pb: Problem, run_fn) -> dict:
    try:
        return pb.evaluate(run_fn(pb))
    except Exception as err:  # noqa: BLE001 - a configuration a library refuses
        return {"error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"}


def sweep(pb: Problem, nfes: list[int], screen: int, top: int, fit_top: int, log) -> list[dict]:
    """Screen every configuration on the first ``screen`` samples, rerun the ``top`` best
    per library and metric on all samples, and fit step schedules for our ``fit_top`` best
    samplers (on separate noise)."""
    rows = []
    small = pb.subset(screen)
    for nfe in nfes:
        t0 = time.perf_counter()
        cands = candidates(pb, nfe)
        screened = []
        for lib, label, fn in cands:
            res = _evaluate(small, fn)
            screened.append((lib, label, fn, res))
            rows.append({"problem": pb.label, "library": lib, "config": label,
                         "nfe_budget": nfe, "screen": True,
                         **{k: res[k] for k in ("nfe", "ode", "sw2", "error") if k in res}})
        t1 = time.perf_counter()
        keep: dict[str, tuple] = {}
        for lib in {c[0] for c in cands}:
            for metric in ("ode", "sw2"):
                ok = [c for c in screened if c[0] == lib and c[3].get(metric) is not None
                      and math.isfinite(c[3][metric]) and c[3]["nfe"] <= nfe]
                for c in sorted(ok, key=lambda c: c[3][metric])[:top]:
                    keep[c[1]] = c
        for lib, label, fn, _ in keep.values():
            rows.append({"problem": pb.label, "library": lib, "config": label, "nfe_budget": nfe,
                         **_evaluate(pb, fn)})
        t2 = time.perf_counter()
        rows += fitted(pb, nfe, screened, fit_top)
        log(f"{pb.label} NFE {nfe}: screened {len(cands)} configurations on {screen} samples "
            f"in {t1 - t0:.0f} s, reran {len(keep)} on {len(pb.noise)} in {t2 - t1:.0f} s, "
            f"fitted {fit_top} schedules in {time.perf_counter() - t2:.0f} s")
    return rows


def fitted(pb: Problem, nfe: int, screened: list, fit_top: int) -> list[dict]:
    """Our best deterministic samplers (by screened ODE error, one per sampler and order)
    with a step schedule fitted by diffplat.samplers.tuning on 1000 other start noises."""
    from diffplat import samplers
    from diffplat.samplers.tuning import fit_levels
    from domains.toy import ExactDenoiser

    ours = sorted((c for c in screened if c[0] == "diffplat" and c[3].get("ode") is not None
                   and math.isfinite(c[3]["ode"])), key=lambda c: c[3]["ode"])
    seen, rows = set(), []
    fit_noise = torch.randn(1000, pb.mix.dim, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(99 + nfe))
    for _, label, _, _ in ours:
        name, opts = parse_label(label)
        key = (name, opts.get("order"), opts.get("variant"), opts.get("coefficients"),
               opts.get("variable"))
        if key in seen:
            continue
        seen.add(key)
        batch = (ExactDenoiser(pb.mix, pb.schedule), fit_noise, None)
        try:
            fit = fit_levels(samplers.get(name), [batch], pb.schedule,
                             samplers.steps_for_nfe(name, nfe), opts)
        except Exception as err:  # noqa: BLE001 - reported as the row's error
            rows.append({"problem": pb.label, "library": "diffplat", "nfe_budget": nfe,
                         "config": f"{label} (fit failed)", "error": str(err)[:200]})
            continue
        rest = {k: v for k, v in opts.items() if k not in ("spacing", "level_max")}
        res = _evaluate(pb, lambda pb, name=name, rest=rest, fit=fit:
                        run_ours(pb, name, nfe, levels=fit["levels"], **rest))
        rows.append({"problem": pb.label, "library": "diffplat", "nfe_budget": nfe,
                     "config": f"{name}: {describe(rest)}, spacing=fitted "
                               f"(from {label.split(': ')[1]})",
                     "levels": fit["levels"], **res})
        if len(seen) >= fit_top:
            break
    return rows


def parse_label(label: str) -> tuple[str, dict]:
    name, rest = label.split(": ", 1)
    opts = {}
    for part in rest.split(", "):
        if "=" not in part:
            continue
        k, v = part.split("=", 1)
        if v in ("True", "False"):
            opts[k] = v == "True"
        elif v == "inf":
            opts[k] = math.inf
        else:
            try:
                opts[k] = int(v)
            except ValueError:
                try:
                    opts[k] = float(v)
                except ValueError:
                    opts[k] = v
    return name, opts


def best(rows: list[dict], problem: str, library: str, nfe: int, metric: str,
         screen: bool = False, fixed_grid: bool = False) -> dict | None:
    """The library's best full run (or, with ``screen``, screening run) by ``metric``;
    ``fixed_grid`` leaves out fitted step schedules."""
    cands = [r for r in rows if r["problem"] == problem and r["library"] == library
             and r["nfe_budget"] == nfe and r.get(metric) is not None
             and bool(r.get("screen")) == screen and math.isfinite(r[metric])
             and r["nfe"] <= nfe and not (fixed_grid and "fitted" in r["config"])]
    return min(cands, key=lambda r: r[metric]) if cands else None


def same_grid(pb: Problem, rows: list[dict], nfes: list[int]) -> list[dict]:
    """The best diffusers solver (by ODE error) rerun on our best configuration's grid."""
    out = []
    for nfe in nfes:
        ours = best(rows, pb.label, "diffplat", nfe, "ode")
        peer = best(rows, pb.label, "diffusers", nfe, "ode")
        if ours is None or peer is None or peer["config"].startswith("EDM"):
            continue
        cls, kw = parse_label(peer["config"])
        kw.pop("timestep_spacing", None)
        kw.pop("use_karras_sigmas", None)
        _, grid_opts = parse_label(ours["config"])
        if "levels" in ours:
            grid = torch.tensor(ours["levels"], dtype=torch.float64)
        else:
            grid = noise_levels(pb.schedule, nfe, grid_opts.get("spacing"),
                                level_max=grid_opts.get("level_max"),
                                denoise_final=grid_opts.get("denoise_final", True))
        kw["final_sigmas_type"] = "zero" if float(grid[-1]) == 0 else "sigma_min"
        if cls == "DEISMultistepScheduler":
            kw.pop("final_sigmas_type")
        try:
            res = pb.evaluate(run_diffusers(pb, cls, nfe, grid=grid, **kw))
        except Exception as err:  # noqa: BLE001
            res = {"error": str(err)[:120]}
        out.append({"problem": pb.label, "nfe_budget": nfe, "peer": peer["config"],
                    "peer_ode": peer["ode"], "ours": ours["config"], "ours_ode": ours["ode"],
                    "peer_on_our_grid": res.get("ode")})
    return out


def summary(data: dict) -> list[dict]:
    rows, out = data["rows"], []
    for problem in data["problems"]:
        for nfe in data["nfes"]:
            entry = {"problem": problem, "nfe": nfe, "floor": data["floors"][problem]}
            for metric in ("ode", "sw2"):
                ours = best(rows, problem, "diffplat", nfe, metric)
                peers = [b for lib in LIBRARIES[1:]
                         if (b := best(rows, problem, lib, nfe, metric)) is not None]
                peer = min(peers, key=lambda r: r[metric]) if peers else None
                entry[metric] = {"ours": ours, "peer": peer,
                                 "fixed": best(rows, problem, "diffplat", nfe, metric,
                                               fixed_grid=True),
                                 "ratio": ours[metric] / peer[metric] if ours and peer else None}
            auto = [r for r in rows if r["problem"] == problem and r["nfe_budget"] == nfe
                    and r.get("auto")]
            entry["auto"] = auto[0] if auto else None
            out.append(entry)
    return out


def pick_auto(data: dict, family: str) -> dict[int, dict]:
    """Per NFE, our fixed-grid configuration (no fitted schedule: auto knows no model) with
    the smallest worst-case ratio to our best over the family's problems ("vp" or "ve")
    and both metrics, on the screening runs (every configuration ran there); sliced W2
    counts only above the screening floor (mean + 2 std)."""
    rows = [r for r in data["rows"] if r.get("screen") and r["library"] == "diffplat"]
    problems = [p for p in data["problems"] if p.lower().startswith(family)]
    choice = {}
    for nfe in data["nfes"]:
        scores: dict[str, float] = {}
        seen: dict[str, int] = {}
        for problem in problems:
            fl = data["screen_floors"][problem]
            clamp = fl["mean"] + 2 * fl["std"]
            for metric in ("ode", "sw2"):
                top = best(rows, problem, "diffplat", nfe, metric, screen=True)
                for r in rows:
                    if r["problem"] != problem or r["nfe_budget"] != nfe or \
                            r.get(metric) is None or not math.isfinite(r[metric]):
                        continue
                    if metric == "sw2":
                        ratio = max(r["sw2"], clamp) / max(top["sw2"], clamp)
                    else:
                        ratio = r["ode"] / top["ode"]
                    scores[r["config"]] = max(scores.get(r["config"], 0.0), ratio)
                    seen[r["config"]] = seen.get(r["config"], 0) + 1
        full = 2 * len(problems)
        config = min((c for c in scores if seen[c] == full), key=scores.get)
        choice[nfe] = {"config": config, "worst_ratio": scores[config]}
    return choice


def fmt(r: dict | None, metric: str) -> str:
    return "-" if r is None else f"{r[metric]:.3g}"


def markdown(data: dict, info: dict, args, elapsed: float) -> str:
    summ = summary(data)
    cmd = (f"python benchmarks/error_vs_nfe.py --samples {args.samples} --ode-samples "
           f"{args.ode_samples} --nfe {' '.join(map(str, data['nfes']))}")
    lines = [
        "### Few-step accuracy against the peers",
        "",
        f"`{cmd}` on {info['date']} ({elapsed / 60:.0f} min; CPU {info['cpu']}, "
        f"{info['threads']} torch thread, torch {info['torch']}, diffusers "
        f"{info['diffusers']}, k-diffusion {data.get('k_diffusion', '?')}).",
        "",
        f"Exact denoisers, float64, {args.samples} samples from one seed; ODE error over the "
        f"first {args.ode_samples}. Each library at its best configuration per NFE "
        f"({data['counts']}); ratio = ours / the best peer. Sliced-W2 floor: two exact "
        "samples of the same size (mean +- std over 8 seeds); a ratio whose peer value lies "
        "within the floor's mean + 2 std is marked (floor): there the comparison is noise.",
        "",
        "| problem | NFE | ODE error ours | best peer | ratio | sliced W2 ours | best peer | "
        "ratio | W2 floor | auto / best peer (ODE, W2) | auto / ours | auto / ours on fixed "
        "grids |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summ:
        fl = e["floor"]
        r_sw = e["sw2"]["ratio"]
        peer_sw = e["sw2"]["peer"]
        at_floor = peer_sw is not None and peer_sw["sw2"] <= fl["mean"] + 2 * fl["std"]
        auto = e["auto"]
        a_peer = a_all = a_fix = "-"
        if auto:
            def pair(key, auto=auto, e=e):
                return (f"{auto['ode'] / e['ode'][key]['ode']:.2f}, "
                        f"{auto['sw2'] / e['sw2'][key]['sw2']:.2f}")

            a_peer, a_all, a_fix = pair("peer"), pair("ours"), pair("fixed")
        lines.append(
            f"| {e['problem']} | {e['nfe']} | {fmt(e['ode']['ours'], 'ode')} | "
            f"{fmt(e['ode']['peer'], 'ode')} | **{e['ode']['ratio']:.3f}** | "
            f"{fmt(e['sw2']['ours'], 'sw2')} | {fmt(peer_sw, 'sw2')} | "
            f"**{r_sw:.3f}**{' (floor)' if at_floor else ''} | {fl['mean']:.3g} +- "
            f"{fl['std']:.1g} | {a_peer} | {a_all} | {a_fix} |")
    lines += ["", "The winning configurations:", "",
              "| problem | NFE | metric | ours | best peer |", "|---|---:|---|---|---|"]
    for e in summ:
        for metric in ("ode", "sw2"):
            o, p = e[metric]["ours"], e[metric]["peer"]
            lines.append(f"| {e['problem']} | {e['nfe']} | {metric} | `{o['config']}` | "
                         f"{p['library']}: `{p['config']}` |")
    if data.get("same_grid"):
        lines += ["", "Solver against grid: the best diffusers solver (by ODE error) rerun on "
                  "the grid of our best configuration:", "",
                  "| problem | NFE | ours | diffusers, own grid | diffusers, our grid |",
                  "|---|---:|---:|---:|---:|"]
        for s in data["same_grid"]:
            pg = s["peer_on_our_grid"]
            lines.append(f"| {s['problem']} | {s['nfe_budget']} | {s['ours_ode']:.3g} | "
                         f"{s['peer_ode']:.3g} | {'-' if pg is None else f'{pg:.3g}'} |")
    if args.plot:
        rel = _relative(args.plot, args.markdown)
        lines += ["", f"![best error against NFE per library]({rel})"]
    return "\n".join(lines)


def _relative(target: str, markdown_file: str | None) -> str:
    import os

    if markdown_file is None:
        return target
    return os.path.relpath(Path(target).resolve(), Path(markdown_file).resolve().parent)


def plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    problems, nfes = data["problems"], data["nfes"]
    fig, axes = plt.subplots(2, len(problems), figsize=(4 * len(problems), 7), squeeze=False)
    colors = {"diffplat": "tab:red", "diffusers": "tab:blue", "k-diffusion": "tab:green"}
    for j, problem in enumerate(problems):
        for i, metric in enumerate(("ode", "sw2")):
            ax = axes[i][j]
            for lib in LIBRARIES:
                ys = [best(data["rows"], problem, lib, n, metric) for n in nfes]
                ax.loglog(nfes, [y[metric] if y else math.nan for y in ys], marker="o",
                          color=colors[lib], label=lib)
            autos = [next((r for r in data["rows"] if r.get("auto") and r["problem"] == problem
                           and r["nfe_budget"] == n), None) for n in nfes]
            ax.loglog(nfes, [a[metric] if a else math.nan for a in autos], marker="s",
                      ls="--", color=colors["diffplat"], mfc="none", label="diffplat auto")
            if metric == "sw2":
                fl = data["floors"][problem]
                ax.axhline(fl["mean"], color="gray", ls="--", label="exact-sample floor")
            ax.set_title(f"{problem}: {'ODE-endpoint error' if metric == 'ode' else 'sliced W2'}",
                         fontsize=9)
            ax.set_xticks(nfes, [str(n) for n in nfes])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("NFE")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_auto_runs(data: dict, problems: dict[str, Problem]) -> None:
    """Run ``--sampler auto`` itself on every problem and NFE (as a user would call it)."""
    for pb in problems.values():
        for nfe in data["nfes"]:
            res = pb.evaluate(run_ours(pb, "auto", nfe))
            data["rows"].append({"problem": pb.label, "library": "diffplat-auto",
                                 "config": "auto", "nfe_budget": nfe, "auto": True, **res})


def _save(path: str, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":"), default=str))
    tmp.replace(path)


# -- defaults only (issue #26): each sampler called by name with only a step count -------------
#: our sampler -> (its diffusers counterpart, whether it is stochastic)
DEFAULT_PAIRS = {
    "ddim": ("DDIMScheduler", False),
    "euler": ("EulerDiscreteScheduler", False),
    "heun": ("HeunDiscreteScheduler", False),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", False),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", False),
    "unipc": ("UniPCMultistepScheduler", False),
    "deis": ("DEISMultistepScheduler", False),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", True),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", True),
}
#: our deterministic samplers that compete for "the best default" at an NFE budget
DEFAULT_OURS = ("ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc", "deis", "ipndm",
                "auto")
DEFAULT_STEPS = (5, 10, 20)
DEFAULT_SETTINGS = ("vp", "cosine")

#: the timestep grids every diffusers scheduler offers, plus Karras sigmas where it has them
_SPACINGS = [{"timestep_spacing": s} for s in ("linspace", "leading", "trailing")]
_KARRAS = [{"use_karras_sigmas": True}]


def peer_defaults(name: str) -> list[tuple[str, dict]]:
    """The standard configurations of the diffusers counterpart of our sampler ``name``:
    timestep_spacing linspace/leading/trailing (and leading with steps_offset 1, Stable
    Diffusion's), Karras sigmas where the scheduler has them, the final step's level
    (final_sigmas_type, DDIM's set_alpha_to_one) and lower_order_final where they exist; for
    UniPC and DEIS order 2 and 3, UniPC's bh1 and bh2, DPM-Solver's midpoint and heun."""
    cls, _ = DEFAULT_PAIRS[name]
    out = []
    if name == "ddim":
        grids = [*_SPACINGS, {"timestep_spacing": "leading", "steps_offset": 1}]
        for grid, one in itertools.product(grids, (True, False)):
            out.append((cls, {"clip_sample": False, "set_alpha_to_one": one, **grid}))
    elif name == "euler":
        for grid, final in itertools.product(_SPACINGS + _KARRAS, ("zero", "sigma_min")):
            out.append((cls, {"final_sigmas_type": final, **grid}))
    elif name == "heun":
        out = [(cls, dict(grid)) for grid in _SPACINGS + _KARRAS]
    elif name == "euler_ancestral":
        out = [(cls, dict(grid)) for grid in _SPACINGS]
    elif name in ("dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde"):
        order = 3 if name == "dpmpp_3m" else 2
        alg = "sde-dpmsolver++" if name.endswith("sde") else "dpmsolver++"
        for st, grid, final, lof in itertools.product(("midpoint", "heun"), _SPACINGS + _KARRAS,
                                                      ("zero", "sigma_min"), (True, False)):
            out.append((cls, {"solver_order": order, "algorithm_type": alg, "solver_type": st,
                              "final_sigmas_type": final, "lower_order_final": lof, **grid}))
    elif name == "unipc":
        for order, bh, grid, final, lof in itertools.product(
                (2, 3), ("bh1", "bh2"), _SPACINGS + _KARRAS, ("zero", "sigma_min"),
                (True, False)):
            out.append((cls, {"solver_order": order, "solver_type": bh, "final_sigmas_type": final,
                              "lower_order_final": lof, **grid}))
    elif name == "deis":
        for order, grid, lof in itertools.product((2, 3), _SPACINGS + _KARRAS, (True, False)):
            out.append((cls, {"solver_order": order, "lower_order_final": lof, **grid}))
    return out


def _peer_steps(cls: str, nfe: int) -> int:
    """A diffusers scheduler's step count for at most ``nfe`` evaluations."""
    return max(1, (nfe + 1) // 2) if cls == "HeunDiscreteScheduler" else nfe


def _row(pb: Problem, res: dict, **extra) -> dict:
    return {"problem": pb.label, **extra, **res}


def _best_of(small: Problem, full: Problem, configs: list[tuple[str, dict]], steps_of,
             metric: str, top: int) -> tuple[dict | None, list[dict]]:
    """Every configuration on ``small`` (the ODE error uses the first ode_n samples, the
    same on both), the ``top`` best by ``metric`` rerun on ``full``; returns (best full
    run, screening rows)."""
    screened = []
    for cls, opts in configs:
        res = _evaluate(small, lambda pb, cls=cls, opts=opts:
                        run_diffusers(pb, cls, 0, steps=steps_of(cls), **opts))
        screened.append({"config": f"{cls}: {describe(opts)}", "cls": cls, "opts": opts, **res})
    ok = sorted((r for r in screened if r.get(metric) is not None and math.isfinite(r[metric])),
                key=lambda r: r[metric])
    best_full = None
    for r in ok[:top]:
        res = _evaluate(full, lambda pb, r=r: run_diffusers(pb, r["cls"], 0,
                                                            steps=steps_of(r["cls"]), **r["opts"]))
        if res.get(metric) is not None and (best_full is None or res[metric] < best_full[metric]):
            best_full = {"config": r["config"], **res}
    return best_full, [{k: v for k, v in r.items() if k not in ("cls", "opts")}
                       for r in screened]


def defaults_sweep(pb: Problem, screen: int, top: int, log,
                   candidates: dict | None = None) -> dict:
    """Per sampler and step count, our default against the best of its counterpart's
    configurations; per NFE, our best default against diffusers' best overall. With
    ``candidates`` (sampler -> list of option dicts), each candidate too, so that the
    defaults can be chosen from the measurements."""
    small = pb.subset(screen)
    out: dict = {"problem": pb.label, "pairs": [], "overall": [], "candidates": []}
    for name, (cls, stochastic) in DEFAULT_PAIRS.items():
        metric = "sw2" if stochastic else "ode"
        configs = peer_defaults(name)
        for steps in DEFAULT_STEPS:
            t0 = time.perf_counter()
            peer, _ = _best_of(small, pb, configs, lambda c, s=steps: s, metric, top)
            ours = _evaluate(pb, lambda pb, s=steps, n=name: run_ours(pb, n, s, steps=s))
            ratio = ours[metric] / peer[metric] if peer and ours.get(metric) else None
            out["pairs"].append({"sampler": name, "peer": cls, "steps": steps, "metric": metric,
                                 "ours": ours, "best_peer": peer, "ratio": ratio,
                                 "peer_configs": len(configs)})
            for opts in (candidates or {}).get(name, []):
                res = _evaluate(pb, lambda pb, s=steps, o=opts, n=name: run_ours(pb, n, s, steps=s,
                                                                         **o))
                out["candidates"].append({"sampler": name, "steps": steps, "options": opts,
                                          "metric": metric, **res,
                                          "ratio": res[metric] / peer[metric]
                                          if peer and res.get(metric) else None})
            shown = "-" if ratio is None else f"{ratio:.3f}"
            log(f"{pb.label} {name:15s} {steps:2d} steps: ours {fmt(ours, metric)} "
                f"{cls} best {fmt(peer, metric)} ratio {shown}  "
                f"({time.perf_counter() - t0:.0f} s)")
    everything = [c for name in DEFAULT_PAIRS if not DEFAULT_PAIRS[name][1]
                  for c in peer_defaults(name)]
    everything += [c for c in diffusers_configs(pb.setting if pb.setting != "cosine" else "vp")
                   if "sde" not in str(c[1].get("algorithm_type", ""))]
    everything = list({(c, describe(o)): (c, o) for c, o in everything}.values())
    for nfe in DEFAULT_STEPS:
        peer, _ = _best_of(small, pb, everything, lambda c, n=nfe: _peer_steps(c, n), "ode", top)
        runs = []
        for name in DEFAULT_OURS:
            res = _evaluate(pb, lambda pb, name=name, k=nfe: run_ours(pb, name, k))
            runs.append({"sampler": name, **res})
        ok = [r for r in runs if r.get("ode") is not None and r["nfe"] <= nfe]
        ours = min(ok, key=lambda r: r["ode"])
        named = [r for r in ok if r["sampler"] != "auto"]
        ours_named = min(named, key=lambda r: r["ode"])
        out["overall"].append({"nfe": nfe, "ours": ours, "ours_by_name": ours_named,
                               "runs": runs, "best_peer": peer,
                               "peer_configs": len(everything),
                               "ratio": ours["ode"] / peer["ode"],
                               "ratio_by_name": ours_named["ode"] / peer["ode"]})
        log(f"{pb.label} NFE {nfe:2d}: our best default {ours['sampler']} {ours['ode']:.4g} "
            f"(without auto: {ours_named['sampler']} {ours_named['ode']:.4g}), diffusers' best "
            f"{peer['ode']:.4g} ({peer['config']}): ratio {ours['ode'] / peer['ode']:.3f}")
    return out


def defaults_markdown(data: dict, info: dict, args) -> str:
    before = data.get("before")
    cmd = (f"python benchmarks/error_vs_nfe.py --defaults --samples {args.samples} "
           f"--ode-samples {args.ode_samples} --settings {' '.join(args.settings)} "
           f"--mixtures {' '.join(args.mixtures)}")
    lines = [
        "### Defaults against the peers",
        "",
        f"`{cmd}` on {info['date']} ({data['seconds'] / 60:.0f} min; CPU {info['cpu']}, "
        f"1 torch thread, torch {info['torch']}, diffusers {info['diffusers']}).",
        "",
        "Each of our samplers called by name with only the step count (its defaults), "
        "against the best of its diffusers counterpart's standard configurations "
        "(timestep_spacing linspace/leading/trailing, Karras sigmas, final_sigmas_type or "
        "DDIM's set_alpha_to_one, lower_order_final; orders 2 and 3 of UniPC and DEIS, bh1/"
        "bh2, midpoint/heun), all on the same start noise and the same K steps (heun and "
        "diffusers' Heun: 2K - 1 evaluations). Exact denoisers, float64, "
        f"{args.samples} samples; the deterministic samplers by the ODE-endpoint error over "
        f"the first {args.ode_samples}, the stochastic ones (dpmpp_2m_sde, euler_ancestral) "
        "by sliced W2 (floor: two exact samples, mean over 8 seeds). Ratio = ours / the "
        "best peer configuration; below 1 ours is ahead."
        + (" Before: the defaults until this change (" + before["when"] + ")." if before else ""),
        "",
    ]
    problems = [p["problem"] for p in data["results"]]
    head = "| sampler | diffusers | metric | " + " | ".join(
        f"{p} K={k}" for p in problems for k in DEFAULT_STEPS) + " |"
    lines += [head, "|---|---|---|" + "---:|" * (len(problems) * len(DEFAULT_STEPS))]

    def cell(res, prev):
        r = res["ratio"]
        txt = "-" if r is None else f"{r:.2f}"
        if prev is not None and prev.get("ratio") is not None:
            txt = f"{prev['ratio']:.2f} -> **{txt}**" if r is not None else txt
        return txt

    for name, (cls, stochastic) in DEFAULT_PAIRS.items():
        cells = []
        for p in data["results"]:
            for k in DEFAULT_STEPS:
                res = next(r for r in p["pairs"] if r["sampler"] == name and r["steps"] == k)
                prev = None
                if before:
                    bp = next((b for b in before["results"] if b["problem"] == p["problem"]), None)
                    prev = bp and next((r for r in bp["pairs"] if r["sampler"] == name
                                        and r["steps"] == k), None)
                cells.append(cell(res, prev))
        lines.append(f"| `{name}` | {cls} | {'sliced W2' if stochastic else 'ODE'} | "
                     + " | ".join(cells) + " |")
    lines += ["", "The best default (any of " + ", ".join(f"`{n}`" for n in DEFAULT_OURS)
              + ", called with only the NFE) against diffusers' best configuration overall "
              "(all of the above and the full sweep's, at most that many evaluations), by the "
              "ODE error:", "",
              "| problem | NFE | ours | ODE error | diffusers' best | ODE error | ratio | "
              "ratio without auto |", "|---|---:|---|---:|---|---:|---:|---:|"]
    for p in data["results"]:
        for o in p["overall"]:
            prev = ""
            if before:
                bp = next((b for b in before["results"] if b["problem"] == p["problem"]), None)
                bo = bp and next((b for b in bp["overall"] if b["nfe"] == o["nfe"]), None)
                prev = f"{bo['ratio']:.2f} -> " if bo else ""
            lines.append(f"| {p['problem']} | {o['nfe']} | `{o['ours']['sampler']}` | "
                         f"{o['ours']['ode']:.3g} | `{o['best_peer']['config']}` | "
                         f"{o['best_peer']['ode']:.3g} | {prev}**{o['ratio']:.2f}** | "
                         f"{o['ratio_by_name']:.2f} (`{o['ours_by_name']['sampler']}`) |")
    lines += ["", "The best peer configuration per sampler (after):", "",
              "| problem | sampler | K | diffusers' best |", "|---|---|---:|---|"]
    for p in data["results"]:
        for r in p["pairs"]:
            if r["best_peer"]:
                lines.append(f"| {p['problem']} | `{r['sampler']}` | {r['steps']} | "
                             f"`{r['best_peer']['config']}` |")
    return "\n".join(lines)


def defaults_main(args, problems: dict, info: dict, log) -> None:
    start = time.perf_counter()
    candidates = None
    if args.candidates:  # JSON, or @file holding it
        text = args.candidates
        candidates = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    results = []
    data = {"samples": args.samples, "ode_samples": args.ode_samples, "steps": DEFAULT_STEPS,
            "info": info, "results": results}
    for label, pb in problems.items():
        res = defaults_sweep(pb, args.screen, args.top, log, candidates)
        res["floor"] = pb.floor()
        results.append(res)
        log(f"{label}: sliced-W2 floor {res['floor']['mean']:.3g} +- {res['floor']['std']:.1g}")
        data["seconds"] = time.perf_counter() - start
        _save(args.json, data)  # after every problem
    if args.before:
        before = json.loads(Path(args.before).read_text())
        data["before"] = {"when": before["info"]["date"], "results": before["results"]}
    log("")
    log("ratio ours / best diffusers configuration of the same solver:")
    for p in results:
        for name in DEFAULT_PAIRS:
            rs = [r for r in p["pairs"] if r["sampler"] == name]
            log(f"  {p['problem']:14s} {name:16s} " + "  ".join(
                f"K={r['steps']}: " + ("-" if r["ratio"] is None else f"{r['ratio']:.3f}")
                for r in rs))
        for o in p["overall"]:
            log(f"  {p['problem']:14s} best default at NFE {o['nfe']:2d}: {o['ratio']:.3f} "
                f"({o['ours']['sampler']}; without auto {o['ratio_by_name']:.3f})")
    if candidates:
        summarize_candidates(results, log)
    _save(args.json, data)
    log(f"wrote {args.json}")
    if args.markdown:
        write_marked(args.markdown, "defaults", defaults_markdown(data, info, args))
        log(f"wrote {args.markdown}")


def summarize_candidates(results: list[dict], log) -> None:
    """Per sampler, every candidate's worst ratio over the problems and step counts."""
    rows = [dict(c, problem=p["problem"]) for p in results for c in p["candidates"]]
    for name in dict.fromkeys(r["sampler"] for r in rows):
        scores = {}
        for r in rows:
            if r["sampler"] != name:
                continue
            key = json.dumps(r["options"], sort_keys=True)
            ratio = r["ratio"] if r["ratio"] is not None else math.inf
            s = scores.setdefault(key, {"worst": 0.0, "worst_10_20": 0.0, "cells": {}})
            s["worst"] = max(s["worst"], ratio)
            if r["steps"] >= 10:
                s["worst_10_20"] = max(s["worst_10_20"], ratio)
            s["cells"][f"{r['problem']} {r['steps']}"] = ratio
        log(f"{name}: candidates by worst ratio at 10 and 20 steps")
        for key, s in sorted(scores.items(), key=lambda kv: kv[1]["worst_10_20"])[:8]:
            log(f"  {s['worst_10_20']:.3f} (all: {s['worst']:.3f})  {key}  " + " ".join(
                f"{v:.2f}" for v in s["cells"].values()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--ode-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--screen", type=int, default=2000,
                        help="samples of the screening pass over every configuration")
    parser.add_argument("--top", type=int, default=6,
                        help="configurations per library and metric rerun on all samples")
    parser.add_argument("--fit-top", type=int, default=3,
                        help="our best samplers that also get a fitted step schedule")
    parser.add_argument("--settings", nargs="+", default=None, choices=ALL_SETTINGS,
                        help="schedules: vp (DDPM linear), cosine (VP), ve (EDM); default vp "
                             "ve, with --defaults vp cosine")
    parser.add_argument("--mixtures", nargs="+", default=list(MIXTURES), choices=list(MIXTURES))
    parser.add_argument("--defaults", action="store_true",
                        help="defaults only: each sampler called with only the step count "
                             "against its diffusers counterpart's best configuration, and our "
                             "best default against diffusers' best (JSON: --json, default "
                             "benchmarks/results/defaults.json; tables: --markdown)")
    parser.add_argument("--candidates",
                        help="with --defaults: JSON {sampler: [options, ...]} of candidate "
                             "defaults (or @FILE holding it), each measured against the same "
                             "peers")
    parser.add_argument("--before", help="with --defaults: an earlier --defaults JSON whose "
                                         "ratios the table shows as before -> after")
    parser.add_argument("--json", default=None,
                        help="raw results: written after a sweep, read with --report-only")
    parser.add_argument("--resume", action="store_true",
                        help="keep the (problem, NFE) sweeps already in --json, run the rest")
    parser.add_argument("--report-only", action="store_true",
                        help="redraw tables and plot from --json; rerun only auto")
    parser.add_argument("--auto", action="store_true",
                        help="print the configuration --sampler auto should use per NFE")
    parser.add_argument("--markdown", help="write the tables between the few-step markers")
    parser.add_argument("--plot", default="docs/img/error_vs_nfe.png",
                        help="PNG path ('' for none)")
    args = parser.parse_args(argv)
    if args.settings is None:
        args.settings = list(DEFAULT_SETTINGS if args.defaults else SETTINGS)
    if args.json is None:
        args.json = f"benchmarks/results/{'defaults' if args.defaults else 'error_vs_nfe'}.json"
    torch.set_num_threads(1)
    info = machine_info()
    info["threads"] = "1"
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"{info['date']}  torch {info['torch']}  diffusers {info['diffusers']}  CPU {info['cpu']}")
    start = time.perf_counter()
    problems = {pb.label: pb for pb in (Problem(s, m, args.samples, args.ode_samples, args.seed)
                                        for s in args.settings for m in args.mixtures)}
    if args.defaults:
        defaults_main(args, problems, info, log)
        return
    if args.report_only:
        data = json.loads(Path(args.json).read_text())
        data["rows"] = [r for r in data["rows"] if not r.get("auto")]
        elapsed = data.get("seconds", 0.0)
    else:
        from importlib.metadata import version

        data = {"nfes": args.nfe, "problems": list(problems), "rows": [], "floors": {},
                "k_diffusion": version("k-diffusion"), "samples": args.samples}
        done: set = set()
        if args.resume and Path(args.json).is_file():  # (problem, NFE) pairs already swept
            old = json.loads(Path(args.json).read_text())
            data["rows"] = [r for r in old["rows"] if not r.get("auto")]
            done = {(r["problem"], r["nfe_budget"]) for r in data["rows"]}
            start -= old.get("seconds", 0.0)
        data["screen_floors"] = {}
        for label, pb in problems.items():
            data["floors"][label] = pb.floor()
            data["screen_floors"][label] = pb.subset(args.screen).floor()
            for nfe in args.nfe:
                if (label, nfe) in done:
                    continue
                data["rows"] += sweep(pb, [nfe], args.screen, args.top, args.fit_top, log)
                data["seconds"] = time.perf_counter() - start
                _save(args.json, data)
        data["same_grid"] = [s for pb in problems.values()
                             for s in same_grid(pb, data["rows"], args.nfe)]
        counts = {lib: len({r["config"] for r in data["rows"] if r["library"] == lib})
                  for lib in LIBRARIES}
        data["counts"] = ", ".join(f"{lib} {n} configurations" for lib, n in counts.items())
        elapsed = time.perf_counter() - start
        data["seconds"] = elapsed
    if args.auto:
        for fam in ("vp", "ve"):
            for nfe, c in pick_auto(data, fam).items():
                log(f"auto {fam} NFE {nfe}: {c['config']}  (worst ratio to our best on the "
                    f"screening runs {c['worst_ratio']:.3f})")
    add_auto_runs(data, problems)
    _save(args.json, data)
    for e in summary(data):
        log(f"{e['problem']:14s} NFE {e['nfe']:3d}  ODE ours {fmt(e['ode']['ours'], 'ode')} "
            f"peer {fmt(e['ode']['peer'], 'ode')} ratio {e['ode']['ratio']:.2f}   SW2 ours "
            f"{fmt(e['sw2']['ours'], 'sw2')} peer {fmt(e['sw2']['peer'], 'sw2')} ratio "
            f"{e['sw2']['ratio']:.2f} (floor {e['floor']['mean']:.3g})")
    if args.plot:
        plot(data, args.plot)
        log(f"wrote {args.plot}")
    if args.markdown:
        write_marked(args.markdown, "few-step", markdown(data, info, args, elapsed))
        log(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
