"""Checkpoints while training: atomic writes that never hold NaN or Inf.

Lightning checkpoints written through ``AtomicCheckpointIO`` go to a temporary file in the
same folder, are fsync'ed and then renamed over the target, so a kill at any moment leaves
either the old or the new file, never a truncated one; ``remove_stale_temporaries`` clears
what a kill left.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from diffplat.fileio import file_mode
from diffplat.store.checkpoint import NonFiniteCheckpointError, nonfinite_tensors

_TMP_SUFFIX = ".tmp"


def _disk_full(folder: Path, margin: int = 64 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def _tmp_prefix(name: str) -> str:
    """Temporaries carry their writer: ``.last.ckpt.pid<PID>~<host>~<random>.tmp``."""
    import re
    import socket

    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "localhost")
    return f".{name}.pid{os.getpid()}~{host}~"


def remove_stale_temporaries(folder: Path, max_age: float = 3600.0) -> list[Path]:
    """Delete the temporaries of checkpoint writes that a kill interrupted, never those of
    a live writer: a temporary of this host is removed when its pid is no longer running,
    one of another host (a shared file system) when it is older than ``max_age`` seconds
    (no write takes that long), one without an owner (older versions) always."""
    import re
    import socket
    import time

    from diffplat.training.runlock import pid_alive

    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "localhost")
    removed = []
    if Path(folder).is_dir():
        for f in Path(folder).glob(f".*.ckpt.*{_TMP_SUFFIX}"):
            owner = re.search(r"\.pid(\d+)~([^~]*)~[^~]*\.tmp$", f.name)
            if owner and owner.group(2) == host:
                pid = int(owner.group(1))
                if pid == os.getpid() or pid_alive(pid):
                    continue
            elif owner:
                try:
                    if time.time() - f.stat().st_mtime < max_age:
                        continue
                except FileNotFoundError:
                    continue
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that never leaves a partially written file behind and never writes
    NaN or Inf weights (NonFiniteCheckpointError instead, the previous file kept). Files get
    the permissions of the umask, as ``open`` would give them (0644 under umask 022)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        bad = nonfinite_tensors({"state_dict": checkpoint.get("state_dict", {}),
                                 "optimizer_states": checkpoint.get("optimizer_states", [])})
        if bad:
            raise NonFiniteCheckpointError(
                f"refusing to write {path}: {len(bad)} tensors hold NaN or Inf (e.g. "
                f"{', '.join(bad[:3])}); the previous checkpoint is kept")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=_TMP_SUFFIX,
                                   dir=path.parent)
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes 0600; a checkpoint is a file
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(err, (RuntimeError, OSError)) and _disk_full(path.parent):
                # torch.save on a full disk says "enforce fail ... unexpected pos"
                raise OSError(errno.ENOSPC, "No space left on device while writing the "
                              "checkpoint (any previous one is kept)", str(path)) from None
            raise
