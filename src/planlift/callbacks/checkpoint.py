"""`last.ckpt` for resuming: the latest training state, saved on a step schedule and when training ends.

(Lightning's ModelCheckpoint refreshes `last.ckpt` only when a monitored top-k checkpoint is saved,
so a run whose final validation did not improve would resume from an older step.)
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class LastCheckpoint(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 50, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._saved_step:
            trainer.save_checkpoint(self.path)
            self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)
