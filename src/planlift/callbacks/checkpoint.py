"""`last.ckpt` for resuming: the latest training state, saved on a step schedule and when training ends,
atomically.

(Lightning's ModelCheckpoint refreshes `last.ckpt` only when a monitored top-k checkpoint is saved,
so a run whose final validation did not improve would resume from an older step.)

A save writes `last.ckpt.tmp` in the same directory, syncs it to disk and renames it over `last.ckpt`
(`os.replace`: atomic on POSIX filesystems), so a process killed during a save leaves the previous
`last.ckpt` whole, never a truncated one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl


def _fsync(path: Path) -> None:
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())


def commit(staging: Path, path: Path) -> None:
    """Make the finished `staging` the checkpoint at `path`: sync it, rename it over `path` (a directory
    checkpoint: two renames, the previous one kept as `<path>.old` until the new one is in place) and sync
    the directory, so that the rename itself survives a crash."""
    _fsync(staging)
    if staging.is_dir() and path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def save_atomically(save: Callable[[Path], None], path: Path) -> None:
    """`save(<path>.tmp)`, then `commit` it to `path`."""
    path = Path(path)
    staging = path.with_name(path.name + ".tmp")
    save(staging)
    commit(staging, path)


class LastCheckpoint(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 50, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == self._saved_step:
            return
        staging = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(staging, weights_only=False)  # collective: every rank takes part
        if trainer.is_global_zero:
            commit(staging, self.path)
        trainer.strategy.barrier()
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)
