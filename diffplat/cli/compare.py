"""``diffplat compare``: schedules x targets x weightings x samplers x NFE across domains."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="diffplat compare",
        description="Run a comparison grid (configs/compare/*.yaml): train one model per "
                    "domain x schedule x target x weighting (or reuse a checkpoint), sample "
                    "each with every sampler and NFE, score with the domain's own metrics, "
                    "and write results.csv, results.json, results.md and PNG plots of quality "
                    "against NFE and of denoising error against log-SNR. Rerunning skips the "
                    "cells already done.")
    p.add_argument("--config", "-c", required=True, help="the comparison YAML")
    p.add_argument("--out", help="output folder (default: the file's `out`)")
    p.add_argument("--seed", type=int, default=None,
                   help="train and sample every model with this seed instead of the file's "
                        "(a replicate); results go to the file's `out` + '-seed<N>' unless "
                        "--out is given")
    p.add_argument("--jobs", type=int, default=None,
                   help="training cells run at once (default: one per --devices entry, else 1)")
    p.add_argument("--devices", default=None,
                   help="GPU indices for parallel cells, e.g. 0,1,2,3 (one cell per GPU)")
    p.add_argument("--retry-failed", action="store_true", help="rerun cells recorded as failed")
    p.add_argument("--domains", nargs="+", default=None, metavar="NAME",
                   help="run (and report) only these domains of the file; the others' cells "
                        "stay as they are on disk")
    p.add_argument("--dry-run", action="store_true", help="validate and list the cells only")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the tables and plots from the results on disk")
    args = p.parse_args(argv)
    if args.jobs is not None:
        from diffplat.checks import positive_int

        positive_int(args.jobs, "--jobs")

    from diffplat.compare.grid import load_grid
    from diffplat.compare.report import write_report
    from diffplat.compare.runner import Runner

    grid = load_grid(Path(args.config), out=args.out, seed=args.seed)
    if args.domains:
        grid = grid.only(args.domains)
    if args.dry_run:
        for cell in grid.sample_cells:
            print(f"{cell.key} (steps {cell.steps})")
        print(f"{len(grid.train_cells)} models, {len(grid.sample_cells)} sampling cells")
        return 0
    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    if not args.report_only:
        Runner(grid, jobs=args.jobs, devices=devices, retry_failed=args.retry_failed).run()
    summary = write_report(grid)
    print(f"[compare] {summary['rows']} cells: {summary.get('ok', 0)} ok, "
          f"{summary.get('failed', 0)} failed, {summary.get('missing', 0)} missing; "
          f"wrote {grid.out}/results.csv, results.json, results.md and "
          f"{len(summary['plots'])} plots")
    print((grid.out / "results.md").read_text())
    return 0 if summary.get("ok", 0) == summary["rows"] else 1
