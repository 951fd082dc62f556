"""The data module: batches of problems (lists of `Problem`) from a task's splits.

Training batches come from a `BatchStream` (planlift.batch_stream): endless and resumable at any batch
(the checkpoint carries the position: `GRPOModule.batches_seen`).
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from planlift.batch_stream import BatchStream
from planlift.distributed import whole_shares
from planlift.errors import ConfigError
from planlift.tasks.base import Problem, Task

log = logging.getLogger(__name__)


def _as_list(batch: list[Problem]) -> list[Problem]:
    return batch


class ProblemDataModule(pl.LightningDataModule):
    """Training batches hold `problems_per_step` problems (P); each becomes G rollouts.

    Args:
        val_problems: how many validation problems each validation pass judges (None = the whole split).
        train_limit: train on the first N training problems only (None = all): a memorization probe, where
            GRPO must raise the reward on problems it sees again and again (the learning canary).
    """

    def __init__(
        self,
        task: Task,
        problems_per_step: int = 8,
        val_problems: int | None = 64,
        val_batch_size: int = 64,
        seed: int = 0,
        train_limit: int | None = None,
    ) -> None:
        super().__init__()
        if problems_per_step < 1:
            raise ConfigError(f"data.problems_per_step must be >= 1, got {problems_per_step}")
        if val_problems is not None and val_problems < 1:
            raise ConfigError(f"data.val_problems must be >= 1 or null, got {val_problems}")
        if train_limit is not None and train_limit < 1:
            raise ConfigError(f"data.train_limit must be >= 1 or null, got {train_limit}")
        if val_batch_size < 1:
            raise ConfigError(f"data.val_batch_size must be >= 1, got {val_batch_size}")
        self.task = task
        self.train_limit = train_limit
        self.problems_per_step = problems_per_step
        self.val_problems = val_problems
        self.val_batch_size = val_batch_size
        self.seed = seed

    def train_dataloader(self) -> BatchStream[Problem]:
        problems = list(self.task.problems("train"))[: self.train_limit]
        if not problems:
            raise ConfigError(f"task {self.task.name!r} has no training problems")
        stream = BatchStream.for_trainer(problems, self.problems_per_step, self.seed, self.trainer)
        self._check_share(len(problems), stream.world_size)
        return stream

    def _check_share(self, count: int, world_size: int) -> None:
        """Fewer training problems than a step takes. BatchStream then makes every step one short batch of
        all of this rank's problems: well defined (each problem is its own GRPO group), only smaller than
        configured, so a warning. A rank with no problem at all would be handed empty batches (nothing to
        sample or train on, while the other ranks wait for it in the step's collectives): an error."""
        where = f"task {self.task.name!r}" + (
            f", data.train_limit={self.train_limit}" if self.train_limit is not None else ""
        )
        if count < world_size:
            raise ConfigError(
                f"{count} training problem(s) ({where}) for {world_size} ranks: every rank needs at least one"
            )
        share = -(-count // world_size)  # the largest rank's share
        if share < self.problems_per_step:
            what = f"the {count} training problems"
            if world_size > 1:
                what = f"a rank's share ({share} at most) of {what} over {world_size} ranks"
            log.warning(
                "data.problems_per_step=%d is more than %s (%s): every step's batch holds at most %d problems, "
                "not %d",
                self.problems_per_step,
                what,
                where,
                share,
                self.problems_per_step,
            )

    def transfer_batch_to_device(
        self, batch: list[Problem], device: torch.device, dataloader_idx: int
    ) -> list[Problem]:
        return batch  # problems are text; tensors are made on the right device when sampling

    def val_dataloader(self) -> DataLoader:
        problems = list(self.task.problems("validation"))[: self.val_problems]
        ranks = self.trainer.world_size if self.trainer else 1
        problems = whole_shares(problems, ranks, "validation problems", "data.val_problems (or the split)")
        return DataLoader(problems, batch_size=self.val_batch_size, shuffle=False, collate_fn=_as_list)
