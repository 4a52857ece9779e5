"""LightningCLI over DiffusionModule: the engine behind ``diffplat fit|validate|test`` and
the library function ``diffplat.training.fit``.

Defaults added here:

* wandb logging in offline mode, written under the run folder; a resumed run continues the
  same wandb run (its id is stored in every checkpoint);
* a ModelCheckpoint section (``--checkpoint.*``) that keeps ``last.ckpt`` in
  ``<default_root_dir>/checkpoints``, and ``--autosave.*`` (``Autosave``), which keeps that
  ``last.ckpt`` fresh every 500 steps and every 2 minutes and at SIGTERM, whatever the
  validation cadence;
* atomic checkpoint writes, and the full run configuration stored in every checkpoint;
* ``--ckpt_path``: the checkpoint is read without unpickling and the classes its stored
  configuration names must lie in trusted packages (the rule every checkpoint reader
  applies); its model configuration is used, with explicit ``--model.*`` flags winning
  where they are safe to change (optimisation for ``fit``, sampling and evaluation options
  for all) and refused in one line otherwise; ``--ckpt_path last`` without a checkpoint says
  that it starts fresh (``fit``) or fails (``validate``/``test``);
* backbone sizes that follow from the data (``Domain.backbone_sizes``) are filled in;
* progress as plain lines off a terminal, no model summary table, library noise silenced
  (``diffplat.progress``); the module prints each validation and writes ``metrics.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from diffplat import progress
from diffplat.store.checkpoint import read_checkpoint
from diffplat.training.atomic import AtomicCheckpointIO
from diffplat.training.callbacks import LAST, Autosave, ResumedOptimiser
from diffplat.training.module import DiffusionModule
from diffplat.training.resume import (  # noqa: F401 - derive_backbone_args: used from here
    EVAL_OPTIONS,
    FIT_OPTIONS,
    _allowed,
    _flatten,
    _hpc_checkpoint,
    _note,
    _other_model_class,
    _plain,
    derive_backbone_args,
    explicit_model_keys,
)
from diffplat.training.runlock import acquire, is_rank_zero, release, run_folders
from diffplat.trust import check_class_paths, enforced

WANDB_CLASS = "pytorch_lightning.loggers.WandbLogger"
WANDB_DEFAULT = {"class_path": WANDB_CLASS, "init_args": {"project": "diffplat", "offline": True}}

class DiffplatCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True,
                 model_class: type | None = None):
        # model_class: a LightningModule other than DiffusionModule (e.g. the audio digit
        # classifier), chosen by the config's ``model.class_path`` (see run()); such configs
        # give the model as class_path + init_args
        self._argv = list(sys.argv[1:] if args is None else args)
        self._resumed: dict[str, Any] | None = None
        self._locked: list[Path] = []  # run folders this process locked (runlock)
        try:
            super().__init__(
                model_class or DiffusionModule,
                subclass_mode_model=model_class is not None,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False},
                auto_configure_optimizers=False,
                args=args,
                run=run,
            )
        finally:
            while self._locked:
                release(self._locked.pop())

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(Autosave, "autosave")
        parser.set_defaults({
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 0,
            # overwrite last.ckpt, which Autosave or an interrupted run may have written,
            # instead of adding last-v1.ckpt beside it
            "checkpoint.enable_version_counter": False,
            "trainer.logger": WANDB_DEFAULT,
            "trainer.default_root_dir": "runs/default",
            # its table counts the EMA copy as "modules in eval mode"; the module prints
            # the model's size in one line instead (diffplat.progress)
            "trainer.enable_model_summary": False,
        })

    # -- --ckpt_path ----------------------------------------------------------------------------
    def _checkpoint_dir(self, cfg: Any) -> Path:
        dirpath = cfg["checkpoint"].get("dirpath") or cfg["autosave"].get("dirpath")
        return Path(dirpath) if dirpath else Path(cfg["trainer"]["default_root_dir"]) / \
            "checkpoints"

    def _parse_ckpt_path(self) -> None:
        """Replaces LightningCLI's, which instantiated whatever classes a checkpoint named
        and let stored values override the user's flags (see the module docstring)."""
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path == "hpc":  # Lightning's SLURM checkpoint: read it as any other
            found = _hpc_checkpoint(Path(cfg["trainer"]["default_root_dir"]))
            if found is None:
                raise FileNotFoundError("--ckpt_path hpc: no hpc_ckpt_<n>.ckpt in "
                                        f"{cfg['trainer']['default_root_dir']}")
            cfg["ckpt_path"] = ckpt_path = str(found)
        if ckpt_path in (None, "best", "registry"):
            return
        if ckpt_path == "last":
            path = self._checkpoint_dir(cfg) / LAST
            if not path.is_file():
                if sub != "fit":
                    raise FileNotFoundError(f"--ckpt_path last: no checkpoint at {path}")
                _note(sub, f"no checkpoint at {path} (--ckpt_path last): starting fresh")
                cfg["ckpt_path"] = None
                return
            cfg["ckpt_path"] = str(path)
        ckpt = read_checkpoint(cfg["ckpt_path"])
        stored = dict(ckpt.get("hyper_parameters") or {})
        stored.pop("_instantiator", None)
        if not stored:
            return
        if "_class_path" in stored:  # a LightningModule in subclass mode (the classifier)
            stored = {"class_path": stored.pop("_class_path"), "init_args": stored}
        check_class_paths(stored, source=f"checkpoint {cfg['ckpt_path']}")
        self._resumed = ckpt
        original = cfg["model"].clone() if hasattr(cfg["model"], "clone") else cfg["model"]
        domain_cfg = stored.get("domain") if isinstance(stored.get("domain"), dict) else None
        flat_stored = _flatten({k: v for k, v in stored.items() if not k.startswith("_")})
        flat_orig = _flatten(original.as_dict() if hasattr(original, "as_dict") else {})
        explicit = explicit_model_keys(self._argv)
        for key in explicit:
            if key in flat_stored and flat_stored[key] != flat_orig.get(key) and \
                    not _allowed(key, sub, domain_cfg):
                raise ValueError(
                    f"--model.{key} {flat_orig.get(key)!r} cannot change a model restored "
                    f"from {cfg['ckpt_path']} (it has {flat_stored[key]!r}); {sub} may change "
                    f"only {', '.join(sorted(FIT_OPTIONS if sub == 'fit' else EVAL_OPTIONS))} "
                    "and the domain's evaluation options")
        differs = sorted(k for k in flat_stored if k in flat_orig and k not in explicit
                         and flat_stored[k] != flat_orig[k])
        if differs:
            _note(sub, f"using the model configuration stored in {cfg['ckpt_path']}; the "
                       f"config differs in {', '.join(differs[:6])}"
                       f"{' ...' if len(differs) > 6 else ''} (pass --model.KEY to change "
                       "a setting that may change)")
        self._parse_stored_model(stored, f"checkpoint {cfg['ckpt_path']}")
        self.config = self.parser.parse_object({sub: {"model": stored}}, self.config)
        for key in explicit:
            dotted = f"{sub}.model.{key}"
            if key in flat_orig:
                self.config[dotted] = original[key]

    def _parse_stored_model(self, stored: dict[str, Any], source: str) -> None:
        """The trust rule at the import itself: the stored model section alone is parsed under
        the import policy (diffplat.trust.enforced) before it is merged with the user's
        config, whose own classes (loggers, callbacks) the policy would otherwise refuse."""
        from jsonargparse import ArgumentParser

        parser = ArgumentParser(exit_on_error=False)
        if self.subclass_mode_model:
            import pytorch_lightning as pl

            parser.add_subclass_arguments(pl.LightningModule, "model")
        else:
            parser.add_class_arguments(DiffusionModule, "model", fail_untyped=False)
        with enforced(source=source):
            parser.parse_object({"model": stored})

    # -- before the classes exist ----------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self._lock_run_folders(cfg)
        self._default_logger_dir(cfg)
        self._fill_backbone_sizes(cfg)

    def _lock_run_folders(self, cfg: Any) -> None:
        """One writer per run folder (diffplat.training.runlock), taken before anything is
        written there (config.yaml, wandb, the clean-up of stale temporaries); global rank
        0 only, released when the run ends, also on an exception."""
        if self.subcommand is None or not is_rank_zero():
            return
        for folder in run_folders(cfg["trainer"]["default_root_dir"],
                                  self._checkpoint_dir(cfg)):
            acquire(folder, f"this {self.subcommand}")
            self._locked.append(folder)

    def _default_logger_dir(self, cfg: Any) -> None:
        """wandb writes under the run folder and, when resuming, into the same run id."""
        logger = cfg["trainer"].get("logger")
        if not (hasattr(logger, "get") and str(logger.get("class_path")) == WANDB_CLASS):
            return
        args = logger["init_args"]
        root = str(cfg["trainer"]["default_root_dir"])
        if args.get("save_dir") in (None, ".") and args.get("dir") is None:
            Path(root).mkdir(parents=True, exist_ok=True)
            args["save_dir"] = root
        run_id = ((self._resumed or {}).get("diffplat") or {}).get("wandb_run_id")
        if run_id and not args.get("id") and not args.get("version"):
            args["id"] = run_id
        import os

        if os.environ.get("WANDB_MODE") == "online":
            args["offline"] = False

    def _fill_backbone_sizes(self, cfg: Any) -> None:
        model = cfg["model"]
        if self.subclass_mode_model or not hasattr(model.get("domain"), "get"):
            return
        if not hasattr(model.get("backbone"), "get") or model["backbone"].get("init_args") is None:
            return
        explicit = self._explicit_backbone_args()
        for key, value in derive_backbone_args(model.as_dict(), explicit).items():
            model["backbone"]["init_args"][key] = value

    def _explicit_backbone_args(self) -> set[str]:
        """Backbone argument names the user set: in a ``-c`` file or as a flag."""
        from diffplat.configs import config_files, load_yaml

        names = set()
        args = self._argv
        for f in config_files(args):
            backbone = (load_yaml(Path(f)).get("model") or {}).get("backbone") or {}
            if isinstance(backbone, dict):
                names |= set(backbone.get("init_args") or {})
        prefix = "--model.backbone.init_args."
        names |= {a[len(prefix):].split("=", 1)[0] for a in args if a.startswith(prefix)}
        return names

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        root = Path(trainer.default_root_dir)
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = str(root / "checkpoints")
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for logger in trainer.loggers:
            progress.drop_wandb_anonymous(logger)
        if isinstance(self.model, DiffusionModule):
            trainer.callbacks.append(ResumedOptimiser())
        self.model.run_config = self.config_dump
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        """Check a restored checkpoint's weights against the model its configuration builds
        (one line naming the first tensor, not Lightning's hundred), and turn a stop by a
        signal into RunStopped (callbacks.Autosave), never a quiet exit 0."""
        if self._resumed is not None and isinstance(self.model, DiffusionModule):
            from diffplat.store.checkpoint import check_weights

            check_weights(self.model.state_dict(), self._resumed.get("state_dict"),
                          f"checkpoint {self.config[subcommand]['ckpt_path']}")
        self._resumed = None  # read again by Lightning; not held during the run
        try:
            super()._run_subcommand(subcommand)
        except SystemExit:  # SIGTERMException, or Lightning's exit after a KeyboardInterrupt
            stopped = next((cb.stopped for cb in self.trainer.callbacks
                            if isinstance(cb, Autosave) and cb.stopped is not None), None)
            if stopped is None:
                raise
            raise stopped from None

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]):
        """Progress as diffplat.progress.mode says: Lightning's bar on a terminal, plain
        lines (LineProgress) in a log file or a pipe, nothing with DIFFPLAT_PROGRESS=0; a
        progress bar the user configured is kept."""
        from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar

        given = config.get("callbacks")
        given = [] if given is None else given if isinstance(given, list) else [given]
        if config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in [*given, *callbacks]):
            how = progress.mode(sys.stdout)
            if how == "lines":
                callbacks = [*callbacks, progress.progress_callback()()]
            elif how == "off":
                config["enable_progress_bar"] = False
        return super()._instantiate_trainer(config, callbacks)

    def _dump_config(self) -> None:
        super()._dump_config()
        self.config_dump = _plain(self.config_dump)


def _run_cli(args: list[str]) -> DiffplatCLI:
    """LightningCLI as if ``diffplat <args>`` had been typed. sys.argv is set to match,
    because Lightning's DDP launcher starts the other ranks by re-running sys.argv; the
    wandb run is finished afterwards, so the next run in this process gets its own."""
    saved = sys.argv
    sys.argv = [saved[0], *args]
    progress.quiet_libraries()
    try:
        return DiffplatCLI(args=None, model_class=_other_model_class(args))
    finally:
        sys.argv = saved
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()


def run(args: list[str]) -> None:
    """``diffplat fit|validate|test ...`` (``args[0]`` is the subcommand); exceptions
    propagate."""
    _run_cli(args)


def fit(config: str | Path | dict[str, Any], *overrides: str,
        ckpt_path: str | None = None) -> Path:
    """Train from a config file (or a config dict) with ``diffplat fit`` semantics: the
    same defaults, checks, autosave and resume rules. ``overrides`` are command-line style
    (``"--trainer.max_steps", "100"``); ``ckpt_path`` resumes (``"last"``). Returns the
    run's ``last.ckpt``; any failure raises (no exit codes, no log scraping): a run that
    SIGTERM or Ctrl-C stopped before ``max_steps`` raises ``RunStopped`` (its checkpoint
    saved), and a run folder another process uses raises ``RunFolderLocked``
    (diffplat.training.runlock).
    """
    import tempfile

    import yaml

    from diffplat.configs import resolve_args

    tmp = None
    if isinstance(config, dict):
        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115
        yaml.safe_dump(config, tmp)
        tmp.close()
        config = tmp.name
    try:
        args = resolve_args(["fit", "-c", str(config), *overrides])
        if ckpt_path is not None:
            args += ["--ckpt_path", str(ckpt_path)]
        cli = _run_cli(args)
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    last = Path(cli.trainer.default_root_dir) / "checkpoints" / LAST
    for cb in cli.trainer.callbacks:
        if isinstance(cb, Autosave):
            last = cb.path(cli.trainer)
    if not last.is_file():
        raise RuntimeError(f"training finished without writing {last}")
    return last
