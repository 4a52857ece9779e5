"""One training cell of a comparison, run in its own process.

    python -m diffplat.compare.worker CELL_DIR

``CELL_DIR/cell.json`` (written by the runner) holds the full training config, the sampling
cells and the scoring settings. The worker trains (or resumes, or reuses a checkpoint), then
measures the denoising error against log-SNR and scores every sampling cell, writing one JSON
file per result, so an interrupted comparison resumes where it stopped. A failure is written
down with its reason and never stops the other cells.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import yaml

from diffplat.compare.results import write_result

TRAIN_FILE = "train.json"
LOSS_FILE = "loss_curve.json"
#: log-SNR values at which the trained denoiser's error is measured (kept inside each
#: schedule's own range)
LOSS_LOG_SNR = [float(x) for x in range(-10, 11)]


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:500]


def train(cell_dir: Path, spec: dict[str, Any]) -> Path:
    """Train the cell's model (resuming an interrupted run); returns the checkpoint path.
    Failures raise, with the reason the training gave."""
    from diffplat.training import fit

    if spec.get("checkpoint"):
        ckpt = Path(spec["checkpoint"])
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint to reuse not found: {ckpt}")
        return ckpt
    run_dir = cell_dir / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    config = cell_dir / "config.yaml"
    config.write_text(yaml.safe_dump(spec["config"], sort_keys=False))
    # an interrupted training resumes exactly
    return fit(config, ckpt_path=str(ckpt) if ckpt.is_file() else None)


@torch.no_grad()
def loss_curve(module, batches: int, seed: int) -> dict[str, Any]:
    """Mean squared x0 error per degree of freedom of the EMA denoiser at fixed log-SNR
    values, relative to E[x0^2] per degree of freedom (so 1 is "predicts the mean" when the
    data is centred), on the first ``batches`` validation batches with fixed noise."""
    from pytorch_lightning.utilities import move_data_to_device

    domain, schedule = module.domain, module.schedule
    lo, hi = schedule.log_snr_range()
    lams = [lam for lam in LOSS_LOG_SNR if lo <= lam <= hi]
    loader = module._eval_loader(domain.val_dataset())
    err = {lam: 0.0 for lam in lams}
    power, count = 0.0, 0
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        batch = move_data_to_device(batch, module.device)
        x0, cond, space = domain.unpack(batch)
        dof = space.dof(x0).double()
        power += float((space.sum(x0.double() ** 2) / dof).sum())
        count += int(dof.numel())
        gen = torch.Generator(device=module.device).manual_seed(seed * 7919 + i)
        eps = space.sample_like(x0, gen)
        for lam in lams:
            t = schedule.t_from_log_snr(torch.full((space.batch_size(x0),), lam,
                                                   device=x0.device))
            a, s = schedule.alpha_sigma(t)
            x_t = space.mix(x0, eps, a, s)
            x0_hat = module.ema_denoiser.predict(x_t, t, noise_space=space, **cond)[1]
            err[lam] += float((space.sum((x0_hat - x0).double() ** 2) / dof).sum())
    if count == 0:
        raise ValueError("the validation split is empty: no loss curve")
    scale = power / count
    return {"log_snr": lams, "mse": [err[lam] / count for lam in lams],
            "relative_mse": [err[lam] / count / scale for lam in lams],
            "x0_power": scale, "examples": count}


def fitted_options(module, ckpt: Path, sampler: str, nfe: int, steps: int,
                   spec: dict[str, Any]) -> dict[str, Any]:
    """The sampler options of a ``NAME@fitted`` cell: the step schedule fitted to this model
    (fitted now and stored beside the checkpoint if it is not there yet)."""
    from diffplat.store import load_step_schedules
    from diffplat.tune import tune_steps as tune_module

    entry = load_step_schedules(ckpt)["schedules"].get(f"{sampler}/{steps}")
    if entry is None:
        prior = {k: v for k, v in (spec.get("sampling") or {}).items()
                 if k not in ("batch_size", "sampler_options")}
        tune = dict(spec.get("tune") or {})
        entry = tune_module(module, ckpt, sampler, nfe, tune.pop("options", None),
                            batches=tune.get("batches", 1),
                            batch_size=tune.get("batch_size", min(spec["num_samples"], 256)),
                            seed=spec["seed"], reference_steps=tune.get("reference_steps", 100),
                            max_evals=tune.get("max_evals"), prior=prior, log=print)
    return {**entry["options"], "levels": entry["levels"]}


def score(module, cell: dict[str, Any], spec: dict[str, Any],
          ckpt: Path | None = None) -> dict[str, Any]:
    from diffplat.compare.grid import base_sampler
    from diffplat.samplers.tuning import GRID_OPTIONS

    t0 = time.perf_counter()
    opts = dict(spec.get("sampling") or {})
    batch_size = opts.pop("batch_size", None)
    # ``sampling: {sampler_options: {...}}``: options of every sampler cell of this entry
    # (spacing, churn, ...); a fitted schedule's levels replace its grid options
    sampler_options = dict(opts.pop("sampler_options", None) or {})
    sampler, fitted = base_sampler(cell["sampler"])
    tune_seconds = 0.0
    if fitted:
        fitted_opts = fitted_options(module, ckpt, sampler, cell["nfe"], cell["steps"],
                                     spec)
        sampler_options = {k: v for k, v in {**sampler_options, **fitted_opts}.items()
                           if k not in GRID_OPTIONS or k == "levels"}
        tune_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
    samples, stats = module.generate(spec["num_samples"], sampler=sampler,
                                     steps=cell["steps"], seed=spec["seed"],
                                     batch_size=batch_size,
                                     sampler_options=sampler_options or None,
                                     **opts)
    seconds = time.perf_counter() - t0
    metrics = module.domain.metrics(samples, "test")
    value = metrics.get(spec["metric"])
    if value is None:
        raise KeyError(f"metric {spec['metric']!r} not among the domain's metrics: "
                       f"{', '.join(metrics)}")
    if not math.isfinite(float(value)):
        raise FloatingPointError(f"metric {spec['metric']} is {value}")
    # numbers as floats; a domain's labels (conformers: the scoring variant) as they are
    out = {"status": "ok", "metrics": {k: v if isinstance(v, str) else float(v)
                                       for k, v in metrics.items()},
           "nfe": stats["nfe"], "sample_seconds": round(seconds, 3)}
    if fitted:
        out["tune_seconds"] = round(tune_seconds, 3)
    return out


def run(cell_dir: Path) -> int:
    from diffplat.runtime import flush_subnormals
    from diffplat.training.checkpoint import load_module  # loss_curve reads its loaders

    flush_subnormals()
    spec = json.loads((cell_dir / "cell.json").read_text())
    train_file = cell_dir / TRAIN_FILE
    previous = json.loads(train_file.read_text()) if train_file.is_file() else {}
    t0 = time.perf_counter()
    try:
        ckpt = train(cell_dir, spec) if previous.get("status") != "ok" else \
            Path(previous["checkpoint"])
        seconds = previous.get("seconds") or round(time.perf_counter() - t0, 1)
        write_result(train_file, {"status": "ok", "checkpoint": str(ckpt), "seconds": seconds})
    except Exception as err:  # noqa: BLE001 - any failure is the cell's result
        traceback.print_exc()
        write_result(train_file, {"status": "failed", "reason": _reason(err),
                            "seconds": round(time.perf_counter() - t0, 1)})
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_module(ckpt, map_location=device).to(device)
    module.domain.setup("validate")
    if not (cell_dir / LOSS_FILE).is_file():
        try:
            write_result(cell_dir / LOSS_FILE, loss_curve(module, spec["loss_curve_batches"],
                                                     spec["seed"]))
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            write_result(cell_dir / LOSS_FILE, {"status": "failed", "reason": _reason(err)})
    for cell in spec["cells"]:
        out = cell_dir / cell["file"]
        if out.is_file() and json.loads(out.read_text()).get("status") == "ok":
            continue
        try:
            result = score(module, cell, spec, ckpt)
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            result = {"status": "failed", "reason": _reason(err)}
        write_result(out, {**cell, **result})
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
