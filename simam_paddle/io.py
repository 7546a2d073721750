"""Atomic file writes, and the lock that gives one process a folder to write.

A write goes to a temporary file in the same folder, flushed to disk, then renamed: a process killed
at any moment (SIGKILL included) leaves either the old file or the new one, never a half-written
file; what it may leave is the temporary file ``.<name>.<random>.tmp`` beside the target, which
``remove_temp_files`` clears (a run's start clears its run directory's, an export its own), only
while holding the folder's lock (:func:`hold_lock`), so never under a process still writing there.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paddle

from .errors import DiskFull, FolderInUse


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


LOCK_NAME = ".simam.lock"
_held: dict[Path, object] = {}  # lock files this process holds, kept open until it exits


def hold_lock(lock_file: str | Path, what: str) -> None:
    """Hold an exclusive lock on ``lock_file`` (created if need be) for the rest of this process.

    The OS releases it when the process ends, however it ends (SIGKILL included), so a killed process
    never blocks the next. Taken by another living process: :class:`FolderInUse` naming its pid, and
    nothing else is touched. Where the OS has no ``fcntl`` (not POSIX), nothing is locked.
    """
    lock_file = Path(lock_file).resolve()
    if lock_file in _held:
        return
    try:
        import fcntl
    except ImportError:
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FolderInUse(f"{what} is in use by another process (pid {holder}); wait for it to end, stop it, "
                          "or choose another folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[lock_file] = handle


def release_lock(lock_file: str | Path) -> None:
    """Let go of a lock taken with :func:`hold_lock` before the process ends."""
    handle = _held.pop(Path(lock_file).resolve(), None)
    if handle is not None:
        handle.close()


def remove_temp_files(folder: str | Path, name: str = "*") -> list[Path]:
    """Remove the temporary files and folders ``.<name>.*.tmp`` that a killed writer left in ``folder``
    (of every target, or of the one ``name``); return them."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".{name}.*.tmp")) if folder.is_dir() else []
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return stale


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: str | Path, exc: OSError) -> DiskFull | None:
    """The :class:`DiskFull` error for a write of ``path`` that failed with ``exc``, or None if that was
    not a full disk (or quota)."""
    if exc.errno not in NO_SPACE:
        return None
    path = Path(path)
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB left"
    except OSError:
        free = "space left unknown"
    return DiskFull(f"no space left on the device of {path.parent} while writing {path.name} ({free}): the "
                    f"files written before are intact; free some space or choose another folder, then start again")


def _atomic(path: str | Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise disk_full(path, exc) or exc from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full(path, exc) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def atomic_paddle_save(obj: Any, path: str | Path) -> None:
    _atomic(path, lambda tmp: paddle.save(obj, tmp))


def atomic_link(source: str | Path, path: str | Path) -> None:
    """``path`` as a second name of the file ``source`` (a hard link: one copy on disk), replacing what
    was at ``path`` atomically; a copy where the file system has no hard links. A later atomic write
    to either name gives that name a new file and leaves the other as it was."""

    def write(tmp: str) -> None:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    _atomic(path, write)


def atomic_savefig(fig, path: str | Path, **kwargs) -> None:
    suffix = Path(path).suffix.lstrip(".") or "png"
    _atomic(path, lambda tmp: fig.savefig(tmp, format=suffix, **kwargs))
