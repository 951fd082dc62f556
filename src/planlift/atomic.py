"""Writing a file so that a process killed mid-write leaves the previous version whole: write beside it,
sync, rename over it (`os.replace` is atomic on POSIX filesystems), sync the directory. Used for
`last.ckpt` (planlift.callbacks.checkpoint) and the on-disk executor-alone cache (planlift.judging).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def _fsync(path: Path) -> None:
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())


def remove(path: Path) -> None:
    """Delete the file, link or directory at `path`, if any."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit(staging: Path, path: Path) -> None:
    """Make the finished `staging` the file (or directory) at `path`: sync it, rename it over `path` (when
    either is a directory, a distributed checkpoint: two renames, the previous one kept as `<path>.old` until
    the new one is in place, whichever kind each is) and sync the directory, so that the rename itself
    survives a crash."""
    _fsync(staging)
    if path.exists() and (staging.is_dir() or path.is_dir()):
        old = path.with_name(path.name + ".old")
        remove(old)  # a file or a directory: a run may switch between the two kinds of checkpoint
        os.replace(path, old)
        os.replace(staging, path)
        try:
            remove(old)
        except OSError as error:  # the new one is in place: a leftover is removed at the next commit
            log.warning("%s: not removed (%s)", old, error)
    else:
        os.replace(staging, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def staging_path(path: Path) -> Path:
    """Where a save of `path` is written before `commit`: beside it, so the rename stays on one filesystem."""
    return path.with_name(path.name + ".tmp")


def save_atomically(save: Callable[[Path], None], path: Path) -> None:
    """`save(<path>.tmp)`, then `commit` it to `path`."""
    path = Path(path)
    staging = staging_path(path)
    save(staging)
    commit(staging, path)
