"""The comparison grid: a YAML file -> validated training cells and sampling cells.

A grid is domains x schedules x targets x weightings (one trained model each: a *training
cell*) x samplers x NFE (one scored sample set each: a *sampling cell*). Every name is checked
against the registries before anything runs, so a typo fails at once with the valid names.

The file::

    out: runs/compare/quick          # where everything is written (resumable)
    seed: 0
    grid:                            # the default grid, for every domain
      schedule: [cosine, edm]
      target: [v]
      weighting: [uniform]
      sampler: [heun, unipc, unipc@fitted]   # @fitted: the steps fitted to each model
      nfe: [10, 20]
    domains:
      toy:
        config: configs/toy/gmm.yaml     # the training config each cell starts from
        overrides: {trainer.max_steps: 600}
        num_samples: 1000
        metric: w2                       # the headline metric of the table and plots
        goal: min                        # min or max
        grid: {nfe: [5, 10, 20]}         # per-domain changes to the grid
        sampling: {batch_size: 500}      # passed to generate(), e.g. prior options
        tune: {batches: 1, batch_size: 256}   # diffplat tune-steps settings of @fitted cells
        prepare:                         # diffplat commands run before any cell, each
          - {path: data/toy, run: data prepare toy --out data/toy}   # when path is missing
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

AXES_TRAIN = ("schedule", "target", "weighting")
AXES_SAMPLE = ("sampler", "nfe")
DOMAIN_KEYS = {"config", "overrides", "num_samples", "metric", "goal", "grid", "sampling",
               "checkpoints", "loss_curve_batches", "prepare", "tune"}


PREPARE_COMMANDS = ("data", "fit")
#: a sampler axis entry ending in this samples on the step schedule fitted to each model
#: (``diffplat tune-steps``; the worker fits it once per model and stores it beside the
#: checkpoint)
FITTED = "@fitted"


class GridError(ValueError):
    """A bad comparison file; the message names the key."""


@dataclass
class TrainCell:
    """One model to train: a domain and a (schedule, target, weighting)."""

    domain: str
    schedule: str
    target: str
    weighting: str
    config: dict[str, Any]
    checkpoint: str | None = None  # a trained checkpoint to reuse instead of training

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.schedule}/{self.target}/{self.weighting}"

    @property
    def dirname(self) -> str:
        digest = hashlib.sha1(json.dumps(self.config, sort_keys=True, default=str).encode())
        return f"{self.domain}-{self.schedule}-{self.target}-{self.weighting}-" \
               f"{digest.hexdigest()[:8]}"


@dataclass
class SampleCell:
    """One sample set to score: a trained model, a sampler and a number of evaluations."""

    train: TrainCell
    sampler: str
    nfe: int
    steps: int

    @property
    def key(self) -> str:
        return f"{self.train.key}/{self.sampler}/{self.nfe}"

    @property
    def filename(self) -> str:
        return f"sample-{self.sampler}-{self.nfe}.json"


@dataclass
class DomainSpec:
    name: str
    config_path: str
    num_samples: int
    metric: str
    goal: str
    sampling: dict[str, Any] = field(default_factory=dict)
    loss_curve_batches: int = 2
    prepare: list[dict[str, str]] = field(default_factory=list)
    tune: dict[str, Any] = field(default_factory=dict)  # tune-steps settings of @fitted


@dataclass
class Grid:
    out: Path
    seed: int
    domains: dict[str, DomainSpec]
    train_cells: list[TrainCell]
    sample_cells: list[SampleCell]

    def only(self, names: list[str]) -> Grid:
        """The same grid restricted to the domains ``names`` (unknown ones list the valid)."""
        bad = [n for n in names if n not in self.domains]
        if bad:
            raise GridError(f"unknown domain {bad[0]!r} in --domains; this file has: "
                            f"{', '.join(self.domains)}")
        keep = set(names)
        return Grid(self.out, self.seed, {k: v for k, v in self.domains.items() if k in keep},
                    [c for c in self.train_cells if c.domain in keep],
                    [c for c in self.sample_cells if c.train.domain in keep])

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "seed": self.seed,
                "domains": {k: asdict(v) for k, v in self.domains.items()},
                "cells": [c.key for c in self.sample_cells]}


def _set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` (nested dicts or dotted keys) into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "." not in key:
            out[key] = merge(out[key], value)
        else:
            _set_dotted(out, key, copy.deepcopy(value))
    return out


def _names(axis: str) -> list[str]:
    from diffplat import samplers, schedules, targets
    from diffplat.losses import weightings

    if axis == "sampler":  # a grid cell needs a known NFE
        return [n for n in samplers.names() if n != "adaptive"]
    return {"schedule": schedules.names, "target": targets.names,
            "weighting": weightings.names}[axis]()


def _module_default(name: str) -> Any:
    """DiffusionModule's default for a constructor argument (schedule, target, ...), as the
    store declares them (``diffplat.store.config.model_arguments``)."""
    import inspect

    from diffplat.store.config import model_arguments

    return inspect.signature(model_arguments).parameters[name].default


def _check_axis(axis: str, values: Any, where: str) -> list:
    if not isinstance(values, list) or not values:
        raise GridError(f"{where}.{axis}: expected a non-empty list, got {values!r}")
    if axis == "nfe":
        bad = [v for v in values if not isinstance(v, int) or v < 1]
        if bad:
            raise GridError(f"{where}.nfe: NFE must be positive integers, got {bad}")
        return values
    valid = _names(axis)
    for v in values:
        base = v.split(FITTED)[0] if axis == "sampler" and isinstance(v, str) and \
            v.endswith(FITTED) else v
        if not isinstance(base, str) or base.lower().replace("-", "_") not in valid:
            raise GridError(f"{where}.{axis}: unknown {axis} {v!r}; valid names: "
                            f"{', '.join(valid)} (a sampler may end in {FITTED})")
        if base != v and base.lower().replace("-", "_") in _unfittable():
            raise GridError(f"{where}.{axis}: {v!r}: only a deterministic sampler's steps "
                            "can be fitted")
    return [v.lower().replace("-", "_") for v in values]


def _unfittable() -> frozenset:
    from diffplat import samplers

    return samplers.STOCHASTIC | {"auto"}


def base_sampler(name: str) -> tuple[str, bool]:
    """(registry name, fitted?) of a grid sampler such as ``unipc@fitted``."""
    return (name[:-len(FITTED)], True) if name.endswith(FITTED) else (name, False)


def load_grid(path: str | Path, root: Path | None = None, out: str | None = None,
              seed: int | None = None) -> Grid:
    """Read and validate a comparison file (see the module docstring). ``seed`` replaces
    the file's seed (a replicate: every model trains and samples with it); unless ``out``
    is given, its results go to the file's folder with ``-seed<N>`` appended."""
    from diffplat import samplers

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"comparison file not found: {path}")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - {"out", "seed", "grid", "domains"}
    if unknown:
        raise GridError(f"{path}: unknown key(s) {sorted(unknown)}; valid: out, seed, grid, "
                        "domains")
    root = root or Path.cwd()
    default_grid = spec.get("grid") or {}
    bad_axes = set(default_grid) - set(AXES_TRAIN + AXES_SAMPLE)
    if bad_axes:
        raise GridError(f"{path}: grid.{sorted(bad_axes)[0]} is not an axis; axes: "
                        f"{', '.join(AXES_TRAIN + AXES_SAMPLE)}")
    domains_spec = spec.get("domains")
    if not isinstance(domains_spec, dict) or not domains_spec:
        raise GridError(f"{path}: 'domains' must map domain names to their settings")
    replicate = seed is not None
    seed = int(spec.get("seed", 0)) if seed is None else int(seed)
    domains: dict[str, DomainSpec] = {}
    train_cells: list[TrainCell] = []
    sample_cells: list[SampleCell] = []
    for name, d in domains_spec.items():
        where = f"domains.{name}"
        if not isinstance(d, dict) or "config" not in d:
            raise GridError(f"{path}: {where} needs a 'config' (a training YAML)")
        extra = set(d) - DOMAIN_KEYS
        if extra:
            raise GridError(f"{path}: {where}: unknown key(s) {sorted(extra)}; valid: "
                            f"{', '.join(sorted(DOMAIN_KEYS))}")
        cfg_path = Path(d["config"])
        cfg_file = cfg_path if cfg_path.is_absolute() else root / cfg_path
        if not cfg_file.is_file():
            raise GridError(f"{path}: {where}.config: no such file {d['config']}")
        base = yaml.safe_load(cfg_file.read_text()) or {}
        grid = {**default_grid, **(d.get("grid") or {})}
        bad_axes = set(grid) - set(AXES_TRAIN + AXES_SAMPLE)
        if bad_axes:
            raise GridError(f"{path}: {where}.grid.{sorted(bad_axes)[0]} is not an axis")
        model = base.get("model") or {}
        axes = {}
        for axis in AXES_TRAIN + AXES_SAMPLE:
            if axis in grid:
                axes[axis] = _check_axis(axis, grid[axis], f"{where}.grid")
            elif axis in AXES_TRAIN or axis == "sampler":
                # the entry's override, else the config's, else the module's default
                axes[axis] = [(d.get("overrides") or {}).get(f"model.{axis}")
                              or model.get(axis) or _module_default(axis)]
            else:
                raise GridError(f"{path}: {where}: no 'nfe' list in the grid")
        goal = d.get("goal", "min")
        if goal not in ("min", "max"):
            raise GridError(f"{path}: {where}.goal must be min or max, got {goal!r}")
        if "metric" not in d:
            raise GridError(f"{path}: {where} needs a 'metric' (the headline number)")
        prepare = d.get("prepare") or []
        for step in prepare if isinstance(prepare, list) else [None]:
            if not isinstance(step, dict) or set(step) != {"path", "run"}:
                raise GridError(f"{path}: {where}.prepare must be a list of "
                                "{path: PATH, run: DIFFPLAT COMMAND}")
            command = str(step["run"]).split()[0] if str(step["run"]).split() else ""
            if command not in PREPARE_COMMANDS:
                raise GridError(f"{path}: {where}.prepare: {step['run']!r} is not a diffplat "
                                f"command; valid: {', '.join(PREPARE_COMMANDS)}")
        domains[name] = DomainSpec(name, str(d["config"]), int(d.get("num_samples", 1000)),
                                   str(d["metric"]), goal, dict(d.get("sampling") or {}),
                                   int(d.get("loss_curve_batches", 2)), prepare,
                                   dict(d.get("tune") or {}))
        overrides = d.get("overrides") or {}
        reuse = d.get("checkpoints") or {}
        for schedule, target, weighting in itertools.product(
                axes["schedule"], axes["target"], axes["weighting"]):
            cfg = merge(base, overrides)
            cfg = merge(cfg, {"model.schedule": schedule, "model.target": target,
                              "model.weighting": weighting, "seed_everything": seed})
            cell = TrainCell(name, schedule, target, weighting, cfg)
            cell.checkpoint = reuse.get(f"{schedule}/{target}/{weighting}")
            train_cells.append(cell)
            for sampler, nfe in itertools.product(axes["sampler"], axes["nfe"]):
                steps = samplers.steps_for_nfe(base_sampler(sampler)[0], nfe)
                sample_cells.append(SampleCell(cell, sampler, nfe, steps))
    out_dir = Path(out or spec.get("out") or f"runs/compare/{path.stem}")
    if replicate and not out:
        out_dir = out_dir.with_name(f"{out_dir.name}-seed{seed}")
    return Grid(out_dir, seed, domains, train_cells, sample_cells)
