"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed.

A process killed at any moment (SIGKILL included) leaves either the old file or the new one, never
a half-written file; what it may leave is the temporary file ``.<name>.<random>.tmp`` beside the
target, which ``remove_temp_files`` clears (a run's start clears its run directory's, an export
its own).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paddle


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _atomic(path: str | Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def atomic_paddle_save(obj: Any, path: str | Path) -> None:
    _atomic(path, lambda tmp: paddle.save(obj, tmp))


def atomic_savefig(fig, path: str | Path, **kwargs) -> None:
    suffix = Path(path).suffix.lstrip(".") or "png"
    _atomic(path, lambda tmp: fig.savefig(tmp, format=suffix, **kwargs))
