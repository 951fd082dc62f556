"""The data module: batches of problems (lists of `Problem`) from a task's splits.

Training batches come from `ProblemStream`, an endless, resumable sequence: batch k is a function of
(seed, k, rank) only, so a run resumed from a checkpoint continues with exactly the batch the
uninterrupted run would have drawn (the checkpoint carries k: `GRPOModule.batches_seen`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from planlift.errors import ConfigError
from planlift.tasks.base import Problem, Task


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

    def train_dataloader(self) -> ProblemStream:
        problems = list(self.task.problems("train"))[: self.train_limit]
        if not problems:
            raise ConfigError(f"task {self.task.name!r} has no training problems")
        trainer = self.trainer  # None outside fit
        module = trainer.lightning_module if trainer is not None else None
        return ProblemStream(
            problems,
            self.problems_per_step,
            self.seed,
            start=getattr(module, "batches_seen", 0),  # restored from the checkpoint before this call
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def transfer_batch_to_device(
        self, batch: list[Problem], device: torch.device, dataloader_idx: int
    ) -> list[Problem]:
        return batch  # problems are text; tensors are made on the right device when sampling

    def val_dataloader(self) -> DataLoader:
        problems = list(self.task.problems("validation"))[: self.val_problems]
        return DataLoader(problems, batch_size=self.val_batch_size, shuffle=False, collate_fn=_as_list)


class ProblemStream:
    """Endless training batches: epoch after epoch of shuffled problems, each rank its own share.

    Epoch e is the permutation a shuffling DataLoader with `Generator().manual_seed(seed)` draws in its
    e-th epoch, so single-process runs see the problems in the same order as before this class existed. Under several ranks each takes every
    `world_size`-th problem of the permutation (as a DistributedSampler). An epoch holds only full
    batches when there are at least `batch_size` problems per rank. `position` counts the batches drawn.
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        batch_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.problems = list(problems)
        self.batch_size = batch_size
        self.seed = seed
        self.position = start
        self.rank = rank
        self.world_size = world_size
        share = len(self.problems[rank::world_size])
        self.batches_per_epoch = max(share // batch_size, 1)  # fewer problems than a batch: one short batch
        self._epoch: tuple[int, list[int]] | None = None

    def __iter__(self) -> Iterator[list[Problem]]:
        while True:
            yield self.batch(self.position)
            self.position += 1

    def batch(self, k: int) -> list[Problem]:
        """The k-th batch of this rank."""
        epoch, index = divmod(k, self.batches_per_epoch)
        order = self._order(epoch)
        chunk = order[index * self.batch_size : (index + 1) * self.batch_size]
        return [self.problems[i] for i in chunk]

    def _order(self, epoch: int) -> list[int]:
        if self._epoch is None or self._epoch[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed)
            partial = len(self.problems) < self.batch_size
            for _ in range(epoch):  # the draws of the epochs before
                _draw_epoch(len(self.problems), generator, partial)
            permutation = _draw_epoch(len(self.problems), generator, partial)
            self._epoch = (epoch, permutation[self.rank :: self.world_size])
        return self._epoch[1]


def _draw_epoch(n: int, generator: torch.Generator, partial: bool) -> list[int]:
    """One epoch of a shuffling DataLoader's draws as Lightning iterates it: the iterator's base seed and
    RandomSampler's permutation. Lightning stops after len(loader) full batches, so the sampler reaches
    its (empty) remainder draw only when the epoch is one partial batch (fewer problems than a batch)."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    permutation = torch.randperm(n, generator=generator).tolist()
    if partial:
        torch.randperm(n, generator=generator)
    return permutation
