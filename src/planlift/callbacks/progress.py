"""A progress bar that counts the run's optimizer steps (`GRPO steps 37/150`, `RM steps`), not batches of an epoch.

GRPO runs are sized in steps (`trainer.max_steps`, with `max_epochs=-1`): Lightning's epoch counter then
reads `Epoch 3/-2`, and with a small training set (`data.train_limit`) the bar restarts every few steps.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    def __init__(self, description: str = "GRPO steps", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.description = description

    def _get_train_description(self, current_epoch: int) -> str:
        return self.description

    @property
    def total_train_batches(self) -> int | float:
        max_steps = self.trainer.max_steps
        return max_steps if max_steps and max_steps > 0 else super().total_train_batches

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.train_progress_bar_id is None:  # one bar for the whole run
            super().on_train_epoch_start(trainer, pl_module)
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self.refresh()
