"""Collect a comparison's results: results.csv / results.json, a markdown table, and plots
of quality against NFE (one per domain) and of denoising error against log-SNR (one per
schedule)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from diffplat.compare.grid import Grid
from diffplat.compare.results import read_result
from diffplat.compare.worker import LOSS_FILE, TRAIN_FILE

BASE_COLUMNS = ["domain", "schedule", "target", "weighting", "sampler", "nfe", "steps",
                "status", "metric", "value", "reason", "train_seconds", "sample_seconds",
                "calls"]


def collect(grid: Grid) -> list[dict[str, Any]]:
    """One row per sampling cell (missing results are rows with status "missing")."""
    rows = []
    for s in grid.sample_cells:
        cell_dir = grid.out / "cells" / s.train.dirname
        train = read_result(cell_dir / TRAIN_FILE) or {}
        result = read_result(cell_dir / s.filename) or {}
        spec = grid.domains[s.train.domain]
        row: dict[str, Any] = {
            "domain": s.train.domain, "schedule": s.train.schedule, "target": s.train.target,
            "weighting": s.train.weighting, "sampler": s.sampler, "nfe": s.nfe,
            "steps": s.steps, "metric": spec.metric, "train_seconds": train.get("seconds")}
        if train.get("status") == "failed":
            row.update(status="failed", reason=f"training: {train.get('reason')}")
        elif result:
            # calls: the network evaluations one sample took, as counted while sampling
            # (guidance's two calls per evaluation make it twice the column's NFE)
            row.update(status=result["status"], reason=result.get("reason", ""),
                       sample_seconds=result.get("sample_seconds"), calls=result.get("nfe"))
            metrics = result.get("metrics") or {}
            row["value"] = metrics.get(spec.metric)
            row.update({f"m.{k}": v for k, v in metrics.items()})
        else:
            row.update(status="missing", reason="not run")
        rows.append(row)
    return rows


def loss_curves(grid: Grid) -> list[dict[str, Any]]:
    out = []
    for cell in grid.train_cells:
        curve = read_result(grid.out / "cells" / cell.dirname / LOSS_FILE)
        if curve and "log_snr" in curve:
            out.append({"domain": cell.domain, "schedule": cell.schedule,
                        "target": cell.target, "weighting": cell.weighting, **curve})
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown(grid: Grid, rows: list[dict[str, Any]]) -> str:
    """Per domain: one row per (schedule, target, weighting, sampler), one column per NFE;
    the best value of each column in bold."""
    lines = [f"# Comparison: {grid.out.name}", ""]
    for name, spec in grid.domains.items():
        drows = [r for r in rows if r["domain"] == name]
        nfes = sorted({r["nfe"] for r in drows})
        lines += [f"## {name}: {spec.metric} ({'lower' if spec.goal == 'min' else 'higher'} "
                  f"is better), {spec.num_samples} samples", "",
                  "| schedule | target | weighting | sampler | "
                  + " | ".join(f"NFE {n}" for n in nfes) + " |",
                  "|" + "---|" * (4 + len(nfes))]
        best = {}
        for n in nfes:
            vals = [r["value"] for r in drows if r["nfe"] == n and r["status"] == "ok"]
            if vals:
                best[n] = min(vals) if spec.goal == "min" else max(vals)
        groups = defaultdict(dict)
        for r in drows:
            groups[(r["schedule"], r["target"], r["weighting"], r["sampler"])][r["nfe"]] = r
        for key, by_nfe in groups.items():
            cells = []
            for n in nfes:
                r = by_nfe.get(n)
                if r is None:
                    cells.append("")
                elif r["status"] != "ok":
                    cells.append(r["status"])
                else:
                    text = _fmt(r["value"])
                    cells.append(f"**{text}**" if r["value"] == best.get(n) else text)
            lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")
        lines.append("")
        off = [r for r in drows if r["status"] == "ok" and r.get("calls") is not None
               and r["calls"] != r["nfe"]]
        if off:
            lines += ["Network evaluations per sample as counted, where they differ from the "
                      "column's NFE: " + "; ".join(
                          f"{r['sampler']} NFE {r['nfe']}: {r['calls']}" for r in off)
                      + (" (guidance calls the network twice per evaluation)"
                         if spec.sampling.get("guidance") else "") + ".", ""]
    failed = [r for r in rows if r["status"] not in ("ok",)]
    if failed:
        lines += ["## Cells that did not finish", ""]
        lines += [f"- {r['domain']}/{r['schedule']}/{r['target']}/{r['weighting']}/"
                  f"{r['sampler']}/NFE {r['nfe']}: {r['status']}: {r['reason']}"
                  for r in failed]
        lines.append("")
    return "\n".join(lines)


def _styles(n: int) -> list[dict[str, Any]]:
    """n distinct line styles: ten colours (tab10), then a new marker and dash pattern for
    every further ten, so no two lines look alike."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    markers, dashes = "osD^v<>px*", ["-", "--", ":", "-."]
    return [{"color": colours[i % 10], "marker": markers[(i // 10 + i) % len(markers)],
             "linestyle": dashes[(i // 10) % len(dashes)]} for i in range(n)]


def _y_scale(ax, values: list[float]) -> None:
    """Log scale when the positive values span more than a decade and a half."""
    pos = [v for v in values if v > 0]
    if pos and len(pos) == len(values) and max(pos) / min(pos) > 30:
        ax.set_yscale("log")


def _nfe_ticks(ax, nfes: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = sorted(set(nfes))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])


def plots(grid: Grid, rows: list[dict[str, Any]], curves: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    paths = []
    for name, spec in grid.domains.items():
        # one panel per trained model, one line per sampler (same colour in every panel)
        models = defaultdict(lambda: defaultdict(list))
        for r in rows:
            if r["domain"] == name and r["status"] == "ok":
                models[(r["schedule"], r["target"], r["weighting"])][r["sampler"]].append(r)
        keys = sorted(models) or [("", "", "")]
        names = sorted({s for m in models.values() for s in m})
        styles = dict(zip(names, _styles(len(names))))  # the same style in every panel
        cols = min(3, len(keys))
        nrows = -(-len(keys) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows + 0.6),
                                 squeeze=False)
        for ax, key in zip(axes.flat, keys):
            values = []
            for sampler, rs in sorted(models.get(key, {}).items()):
                rs.sort(key=lambda r: r["nfe"])
                ax.plot([r["nfe"] for r in rs], [r["value"] for r in rs], label=sampler,
                        **styles[sampler])
                values += [r["value"] for r in rs]
            ax.set_xscale("log")
            nfes = sorted({r["nfe"] for rs in models.get(key, {}).values() for r in rs})
            if nfes:
                _nfe_ticks(ax, nfes)
            _y_scale(ax, values)
            ax.set_title("/".join(key), fontsize=9)
            ax.set_xlabel("NFE")
            ax.grid(True, which="both", alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        axes[0][0].set_ylabel(f"{spec.metric} ({'lower' if spec.goal == 'min' else 'higher'}"
                              " is better)")
        if names:
            handles = [plt.Line2D([], [], **styles[s]) for s in names]
            fig.legend(handles, names, loc="lower center", ncol=min(len(names), 8),
                       fontsize=8, frameon=False)
        fig.suptitle(f"{name}: quality against NFE")
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        path = grid.out / f"quality_vs_nfe_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    for schedule in sorted({c["schedule"] for c in curves}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        mine = [c for c in curves if c["schedule"] == schedule]
        for style, c in zip(_styles(len(mine)), mine):
            ax.plot(c["log_snr"], c["relative_mse"],
                    label=f"{c['domain']}/{c['target']}/{c['weighting']}", **style)
        ax.set_yscale("log")
        ax.set_xlabel("log-SNR")
        ax.set_ylabel("x0 MSE / E[x0^2] (EMA model, validation data)")
        ax.set_title(f"schedule {schedule}: denoising error against log-SNR")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = grid.out / f"loss_vs_logsnr_{schedule}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(grid: Grid) -> dict[str, Any]:
    """Write results.csv, results.json, results.md and the plots; returns a summary."""
    rows = collect(grid)
    curves = loss_curves(grid)
    extra = sorted({k for r in rows for k in r if k.startswith("m.")})
    with open(grid.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=BASE_COLUMNS + extra, restval="")
        writer.writeheader()
        writer.writerows(rows)
    (grid.out / "results.json").write_text(json.dumps(
        {"grid": grid.to_json(), "rows": rows, "loss_curves": curves}, indent=2, default=str))
    (grid.out / "results.md").write_text(markdown(grid, rows))
    paths = plots(grid, rows, curves)
    counts = defaultdict(int)
    for r in rows:
        counts[r["status"]] += 1
    return {"rows": len(rows), **counts, "plots": [str(p) for p in paths]}
