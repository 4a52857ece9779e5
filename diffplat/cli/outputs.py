"""Output folders and files that are either complete or absent.

``sample`` and ``export`` write into a temporary folder beside ``--out`` and rename it into
place only once everything is written, so a full disk, a kill or a crash never leaves a
half-written folder, and a reused ``--out`` never mixes old files with new ones:

* before any work, :func:`check_out` refuses a symbolic link (the folder itself, or one
  inside it that a command would write through) and a folder that is not empty, unless
  ``--overwrite`` says to replace it;
* :func:`staged` yields the temporary folder and, when the block succeeds, gives its files
  the modes the umask asks for and renames it over ``--out`` (an old folder is replaced only
  then); when the block fails the temporary folder is removed and a full disk is named;
* :func:`check_file_target` and :func:`write_text` do the same for one file
  (``evaluate --json``, the fitted step schedules of ``tune-steps``).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diffplat.fileio import atomic_write_text, umask

PARTIAL = ".partial"  # suffix of a folder being written (.NAME.XXXX.partial)


def _links_inside(folder: Path) -> list[Path]:
    links = []
    for root, dirs, files in os.walk(folder):  # does not follow links
        links += [Path(root) / n for n in (*dirs, *files) if (Path(root) / n).is_symlink()]
    return links


def _link_message(flag: str, out: Path, link: Path) -> str:
    return (f"refusing {flag} {out}: {link} is a symbolic link (to {os.readlink(link)}), "
            "which would be written through or replaced; remove it or choose another folder")


def check_out(path: str | Path, overwrite: bool = False, flag: str = "--out",
              marker: str | None = None, command: str = "diffplat") -> Path:
    """Refuse an output folder that cannot take a command's files, before any work:
    a link, a file, a non-empty folder without ``overwrite``, and with it a folder that
    the command did not write (no ``marker`` file in it) or that holds the working
    folder; and check that a temporary folder can be made beside it (read-only or full
    file system)."""
    out = Path(path)
    if out.is_symlink():
        raise ValueError(_link_message(flag, out, out))
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is an existing file, not a folder")
    if out.is_dir():
        links = _links_inside(out)
        if links:
            raise ValueError(_link_message(flag, out, links[0]))
        entries = sorted(p.name for p in out.iterdir())
        if entries and not overwrite:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ValueError(f"{flag} {out} is not empty ({len(entries)} entries: {shown}); "
                             "give --overwrite to replace its content once the new content "
                             "is complete, or choose a new folder")
        if entries and marker is not None and marker not in entries:
            raise ValueError(f"refusing to overwrite {flag} {out}: it has no {marker}, so "
                             f"`{command}` did not write it; choose a new folder")
        cwd = Path.cwd().resolve()
        if entries and (cwd == out.resolve() or out.resolve() in cwd.parents):
            raise ValueError(f"refusing to overwrite {flag} {out}: it holds the current "
                             "folder; choose a new folder")
    parent = _parent(out)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=f".{_name(out)}.", suffix=PARTIAL, dir=parent))
        (probe / ".diffplat-write-test").write_bytes(b"")
        shutil.rmtree(probe)
    except OSError as err:  # read-only, no permission: here, not after the work
        raise OSError(err.errno, err.strerror or str(err), str(out)) from None
    return out


def _parent(out: Path) -> Path:
    return Path(os.path.abspath(out)).parent


def _name(out: Path) -> str:
    return Path(os.path.abspath(out)).name or "out"


def disk_full(err: BaseException, folder: Path, margin: int = 1 << 20) -> bool:
    """Whether ``err`` means the file system ran out of space (numpy and safetensors say it
    in their own words: "N requested and M written", "os error 28")."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    if re.search(r"requested and \d+ written|No space left|os error 28|unexpected pos", text):
        return True
    if not (isinstance(err, RuntimeError) or isinstance(err, OSError) and err.errno is None):
        return False  # a permission or other error says itself
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def _apply_umask(folder: Path) -> None:
    """Modes as if the files had been created with open() (0o666 & ~umask; folders 0o777):
    mkdtemp, mkstemp and safetensors create theirs 0600/0700 whatever the umask."""
    mask = umask()
    for root, dirs, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            exe = os.stat(p).st_mode & 0o100
            os.chmod(p, (0o777 if exe else 0o666) & ~mask)
        for name in dirs:
            os.chmod(Path(root) / name, 0o777 & ~mask)
    os.chmod(folder, 0o777 & ~mask)


@contextmanager
def staged(path: str | Path, overwrite: bool = False, what: str = "the output",
           flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block succeeds, rename it over
    ``path`` (an existing folder is replaced only with ``overwrite``, and only then). When
    it fails, nothing of it is left and a full disk is said in one line."""
    out = Path(path)
    parent = _parent(out)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_name(out)}.", suffix=PARTIAL, dir=parent))
    try:
        yield tmp
        _apply_umask(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and disk_full(err, parent):
            raise OSError(errno.ENOSPC, f"No space left on device while writing {what}; "
                          f"nothing was written to {flag}", str(out)) from None
        raise
    _commit(tmp, out, overwrite, flag)


def _commit(tmp: Path, out: Path, overwrite: bool, flag: str) -> None:
    target = Path(os.path.abspath(out))
    if target.is_symlink():  # planted while the command ran
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(_link_message(flag, out, out))
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:  # another command filled it meanwhile: keep both, say where
            raise ValueError(f"{flag} {out} was filled by another command while this one "
                             f"ran; its output is kept in {tmp}")
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                    dir=target.parent))
        os.rename(target, old / "content")
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old / "content", target)  # put the old folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, target)  # over an empty folder too (POSIX)
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise ValueError(f"{flag} {out} was filled by another command while this one "
                             f"ran; its output is kept in {tmp}") from None
        if not target.is_dir():
            raise
        for entry in tmp.iterdir():  # an empty folder that cannot be replaced (a mount)
            os.rename(entry, target / entry.name)
        tmp.rmdir()


def check_file_target(path: str | Path, flag: str) -> Path:
    """Refuse, before any work, a file target that cannot be written: a folder, a link,
    or a place where no file can be created."""
    target = Path(path)
    if target.is_symlink():
        raise ValueError(f"refusing {flag} {target}: it is a symbolic link (to "
                         f"{os.readlink(target)}); give a plain file")
    if target.is_dir():
        raise ValueError(f"{flag} {target} is a folder; give a file name")
    parent = _parent(target)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(target)) from None
    return target


def write_text(path: str | Path, text: str, flag: str = "the file") -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``
    (mode as the umask says); a failure leaves the old file, or none."""
    target = Path(path)
    try:
        atomic_write_text(target, text)
    except Exception as err:
        if disk_full(err, _parent(target)):
            raise OSError(errno.ENOSPC, f"No space left on device while writing {flag}",
                          str(target)) from None
        raise
    return target
