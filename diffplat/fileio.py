"""Small file writes shared by training, the store and the CLI: the process umask and an
atomic write that honours it.

``tempfile.mkstemp`` (and safetensors) create files 0600 whatever the umask, so every
temporary-then-rename write sets the mode ``open()`` would have given (0o666 & ~umask).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def umask() -> int:
    """The process's umask, read from /proc where it can be (``os.umask`` can only be read
    by setting it, which races with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    return 0o666 & ~umask()


def atomic_write(path: str | Path, write: Callable[[IO], Any], binary: bool = False) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path`` (fsynced, the umask's mode) and
    rename it over ``path``: a reader sees the old file or the new one, never part of one;
    a failure leaves the old file (or none) and no temporary."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``text`` written to ``path`` atomically (``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(text))
