"""One writer per run folder: the lock that ``diffplat fit|validate|test`` holds on
``<default_root_dir>`` while it runs.

A second ``fit`` in the folder of a live run used to delete the live run's in-flight
checkpoint temporary (the start-up cleanup), kill it, and overwrite ``last.ckpt`` and
``config.yaml`` with its own. Now the folder holds ``.diffplat.lock``, locked with
``fcntl.flock`` and holding the owner's pid, host and start time:

* the kernel drops a flock when its process dies (also on SIGKILL), so a lock file left by
  a dead run is stale by construction: the next run takes it over with a note;
* a second writer is refused with ``RunFolderLocked`` (one line naming the folder, the pid
  and the host) before it writes anything;
* only the process that may write the folder takes it: global rank 0 of a DDP run (the
  other ranks are told apart by their environment, see ``is_rank_zero``).

Locks are re-entrant within a process (``diffplat.training.fit`` called from a run's own
callbacks, or the CLI's two checks) and released at exit, also on exceptions.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".diffplat.lock"
#: environment variables that carry a process's global rank (torchrun, SLURM, Open MPI,
#: MPICH/Intel MPI, LSF), then those of Lightning's own DDP launcher (local rank, node rank)
_GLOBAL_RANK_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK",
                     "JSM_NAMESPACE_RANK")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK")

_held: dict[Path, tuple[int, int]] = {}  # folder -> (fd, depth)


class RunFolderLocked(RuntimeError):
    """Another live process holds the run folder; nothing was written."""


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 as far as its environment tells (Lightning's
    DDP launcher starts the other ranks with LOCAL_RANK set; torchrun and SLURM set RANK
    and SLURM_PROCID)."""
    for var in _GLOBAL_RANK_VARS:
        if os.environ.get(var, "").strip().lstrip("-").isdigit():
            return int(os.environ[var]) == 0
    for var in _LOCAL_RANK_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) != 0:
            return False
    return True


def _host() -> str:
    return socket.gethostname() or "localhost"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _owner(path: Path) -> dict[str, str]:
    """The fields of a lock file (pid, host, since); the owner writes them right after it
    takes the lock, so an empty read is retried briefly."""
    for _ in range(20):
        try:
            text = path.read_text()
        except OSError:
            text = ""
        if text.strip():
            return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        time.sleep(0.05)
    return {}


def acquire(folder: str | Path, what: str = "this run") -> Path:
    """Lock ``folder`` (created if needed) for this process; RunFolderLocked when another
    live process holds it. Returns the lock file."""
    import fcntl

    folder = Path(folder).absolute()
    if folder in _held:
        fd, depth = _held[folder]
        _held[folder] = (fd, depth + 1)
        return folder / LOCK_FILE
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = _owner(path)
            since = f" since {owner['since']}" if owner.get("since") else ""
            raise RunFolderLocked(
                f"run folder {folder} is in use by pid {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')}{since} ({path}); wait for that run to end or stop "
                f"it, or give {what} another --trainer.default_root_dir") from None
        # the previous owner may have unlinked the file between our open and our flock:
        # then we hold a lock on a file nobody else can see, so start again
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _owner_now(fd)
    if stale.get("pid") and stale.get("pid") != str(os.getpid()):
        import sys

        print(f"diffplat: note: taking over the stale lock {path} of pid {stale['pid']} on "
              f"{stale.get('host', '?')} (that run has ended)", file=sys.stderr)
    os.ftruncate(fd, 0)
    os.write(fd, (f"pid={os.getpid()}\nhost={_host()}\n"
                  f"since={time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode())
    os.fsync(fd)
    _held[folder] = (fd, 1)
    return path


def _owner_now(fd: int) -> dict[str, str]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace")
    os.lseek(fd, 0, os.SEEK_SET)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def release(folder: str | Path) -> None:
    """Undo one ``acquire``; the last one unlinks the lock file and drops the lock."""
    folder = Path(folder).absolute()
    if folder not in _held:
        return
    fd, depth = _held[folder]
    if depth > 1:
        _held[folder] = (fd, depth - 1)
        return
    del _held[folder]
    try:
        (folder / LOCK_FILE).unlink(missing_ok=True)  # while still holding it (see acquire)
    finally:
        os.close(fd)


def run_folders(root: str | Path, checkpoint_dir: str | Path | None = None) -> list[Path]:
    """The folders a run writes and locks: its root, and its checkpoint folder when that lies
    outside the root (``--checkpoint.dirpath``/``--autosave.dirpath`` elsewhere)."""
    folders = [Path(root).absolute()]
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir).absolute()
        if not ckpt.is_relative_to(folders[0]):
            folders.append(ckpt)
    return folders


def holds(folder: str | Path) -> bool:
    """Whether this process holds the lock of ``folder``."""
    return Path(folder).absolute() in _held
