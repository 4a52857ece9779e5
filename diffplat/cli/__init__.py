"""The ``diffplat`` command.

    diffplat fit|validate|test -c CONFIG [--key value ...]   train / evaluate (LightningCLI)
    diffplat sample --ckpt CKPT --num N --out DIR ...         draw samples, write files
    diffplat tune-steps --ckpt CKPT --sampler S --nfe K        fit a step schedule to a model
    diffplat evaluate (--ckpt CKPT | --samples DIR) ...       score samples or the data
    diffplat export --ckpt CKPT --out DIR                      safetensors + config
    diffplat data prepare|info DOMAIN ...                      build / describe datasets
    diffplat compare -c GRID                                   schedules x samplers across domains
    diffplat models                                            shipped models and their figures
    diffplat distill --teacher CKPT --method M --nfe K        a K-step student of a model
"""

from __future__ import annotations

import os
import sys

from diffplat import plugins

USAGE = __doc__.split("\n", 2)[2]
LIGHTNING = ("fit", "validate", "test")
NO_COMPUTE = ("models",)  # commands that only read files and print


def _error(cmd: str, msg: str, code: int) -> int:
    first = str(msg).strip().splitlines()[0] if str(msg).strip() else repr(msg)
    print(f"diffplat {cmd}: error: {first}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return 0
    cmd, rest = argv[0], argv[1:]
    asks_help = any(a in ("-h", "--help") or a.endswith(".help") for a in rest)
    # --help and the listings compute nothing: no torch, no thread measurement for them
    computes = not asks_help and cmd not in NO_COMPUTE
    if computes:
        from diffplat.runtime import flush_subnormals

        flush_subnormals()  # subnormal floats make CPU kernels ~50x slower (diffplat.runtime)
    try:
        if computes:
            _threads(cmd)
        from diffplat.configs import resolve_args

        rest = resolve_args(rest)
        if cmd in LIGHTNING and asks_help:
            plugins.load_all_classes()  # so the help lists the real domains and backbones
            rest = [plugins.help_name(a) if i and rest[i - 1] == "--model.domain.help" else a
                    for i, a in enumerate(rest)]
        if cmd in LIGHTNING:
            return _lightning(cmd, rest)
        if cmd == "sample":
            from diffplat.cli.sample import main as sub
        elif cmd == "tune-steps":
            from diffplat.cli.tune_steps import main as sub
        elif cmd == "evaluate":
            from diffplat.cli.evaluate import main as sub
        elif cmd == "export":
            from diffplat.cli.export import main as sub
        elif cmd == "data":
            from diffplat.cli.data import main as sub
        elif cmd == "compare":
            from diffplat.cli.compare import main as sub
        elif cmd == "models":
            from diffplat.cli.models import main as sub
        elif cmd == "distill":
            from diffplat.cli.distill import main as sub
        elif cmd in plugins.commands():
            sub = plugins.command(plugins.commands()[cmd][1])
        else:
            known = ["fit", "validate", "test", "sample", "tune-steps", "evaluate", "export",
                     "data", "compare", "models", "distill", *plugins.commands()]
            return _error(cmd, f"unknown command {cmd!r}; commands: {', '.join(known)}", 2)
        return sub(rest)
    except Exception as err:  # noqa: BLE001 - sorted below; anything else re-raises
        return _failure(cmd, err)


def _lightning(cmd: str, rest: list[str]) -> int:
    """fit/validate/test: a run that a signal stopped exits 128 + its number with one line
    (where it stopped, the checkpoint, how to resume); a run folder in use is refused (1);
    Lightning's own configuration checks (``--trainer.max_steps -5``) are one line (2)."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from diffplat.training.callbacks import RunStopped
    from diffplat.training.lightning import run
    from diffplat.training.runlock import RunFolderLocked

    try:
        run([cmd, *rest])
    except RunStopped as stop:
        print(f"diffplat {cmd}: {stop}", file=sys.stderr)
        return stop.exit_code
    except RunFolderLocked as err:
        return _error(cmd, err, 1)
    except MisconfigurationException as err:
        return _error(cmd, err, 2)
    return 0


def _threads(cmd: str) -> None:
    """Set the torch thread count (diffplat.runtime.apply_threads: the idle cores unless the
    user chose); ``fit`` names the choice in its first line (DiffusionModule.on_fit_start)."""
    from diffplat.runtime import apply_threads

    apply_threads()


def _failure(cmd: str, err: Exception) -> int:
    """The exit status and one line for a failure the user can act on; other exceptions
    (bugs) keep their traceback. The error types are imported only now, so that a command
    that succeeds never pays for them."""
    from diffplat.errors import NonFiniteError
    from diffplat.registry import UnknownNameError

    jsonargparse = sys.modules.get("jsonargparse")  # loaded by whatever raised it
    if jsonargparse is not None and isinstance(err, jsonargparse.ArgumentError):
        return _error(cmd, _config_message(err), 2)
    if isinstance(err, NonFiniteError) or type(err).__name__ in (
            "NonFiniteLossError", "NonFiniteCheckpointError"):
        return _error(cmd, err, 1)
    if isinstance(err, (FileNotFoundError, UnknownNameError, ValueError, KeyError,
                        NotImplementedError)):
        return _error(cmd, err, 2 if cmd in LIGHTNING else 1)
    if isinstance(err, (ImportError, OSError)):
        from diffplat.cli.failures import import_failure

        message = import_failure(err)
        if message is None and isinstance(err, ImportError):
            raise err  # a bug in diffplat itself: keep the traceback
        return _error(cmd, message or _os_message(err), 1)
    raise err


def _help() -> str:
    lines = ["usage: diffplat <command> [options]", "", "commands:", USAGE.rstrip()]
    extra = plugins.commands()
    for name, (plugin, _) in extra.items():
        text = plugin.command_help.get(name, plugin.summary)
        lines.append(f"    diffplat {name} {text}")
    lines += ["", "domains (installed plug-ins, entry-point group diffplat.domains):"]
    for plugin in plugins.plugins().values():
        alias = f" ({', '.join(plugin.aliases)})" if plugin.aliases else ""
        lines.append(f"    {plugin.name}{alias}: {plugin.summary}")
    lines += ["", "Run `diffplat <command> --help` for the options of a command."]
    return "\n".join(lines)


def _os_message(err: OSError) -> str:
    """A disk or permission problem in one line, naming the file."""
    import errno

    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    hint = {errno.ENOSPC: "; free some space or write elsewhere",
            errno.EACCES: "; choose a folder you can write to",
            errno.EROFS: "; the file system is read-only, choose another folder"}
    reason = err.strerror or str(err).strip().splitlines()[0]
    return f"{reason}{where}{hint.get(err.errno, '')}"


def _config_message(err: Exception) -> str:
    """Fold jsonargparse's nested report into one line: the dotted key, then the cause.

    'Parser key "model.domain": ... Parser key "dim": Expected int' -> 'model.domain.dim:
    Expected int'."""
    import re

    keys, detail = [], []
    for line in str(err).splitlines():
        line = line.strip(" -")
        m = re.match(r'Parser key "([^"]+)":?$', line)
        if m:
            keys.append(m.group(1))
        elif line and not line.startswith("Problem with given class_path"):
            detail.append(line)
    cause = detail[-1] if detail else str(err).strip()
    return f"{'.'.join(keys)}: {cause}" if keys else cause


if __name__ == "__main__":
    raise SystemExit(main())
