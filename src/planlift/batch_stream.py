"""Endless, resumable training batches: batch k is a function of (seed, k, rank) only.

A run resumed from a checkpoint continues with exactly the batch the uninterrupted run would have
drawn: the checkpoint carries k (`GRPOModule.batches_seen`, `RubricRMModule.batches_seen`) and the
data module starts the stream there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

import torch

Item = TypeVar("Item")


class BatchStream(Generic[Item]):
    """Epoch after epoch of shuffled items, each rank its own share.

    Epoch e is the permutation a shuffling DataLoader with `Generator().manual_seed(seed)` draws in its
    e-th epoch, so single-process runs see the items in the same order as a Lightning fit over that
    DataLoader. With `keep_partial` (a DataLoader with `drop_last=False`) an epoch ends with its short
    batch; without it (the planner's problems) an epoch holds only full batches, except that fewer items
    than a batch make one short batch. Under several ranks each takes every `world_size`-th item of the
    permutation (as a DistributedSampler). `position` counts the batches drawn.
    """

    def __init__(
        self,
        items: Sequence[Item],
        batch_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        keep_partial: bool = False,
    ) -> None:
        self.items = list(items)
        self.batch_size = batch_size
        self.seed = seed
        self.position = start
        self.rank = rank
        self.world_size = world_size
        share = len(self.items[rank::world_size])
        if keep_partial:
            self.batches_per_epoch = max(-(-share // batch_size), 1)
        else:  # fewer items than a batch: one short batch
            self.batches_per_epoch = max(share // batch_size, 1)
        n = len(self.items)
        # an epoch that ends with a short batch exhausts the sampler, which then draws its remainder
        self._exhausts_sampler = n % batch_size != 0 if keep_partial else n < batch_size
        self._epoch: tuple[int, list[int]] | None = None

    @classmethod
    def for_trainer(
        cls, items: Sequence[Item], batch_size: int, seed: int, trainer, keep_partial: bool = False
    ) -> BatchStream[Item]:
        """This rank's stream for a data module's `train_dataloader`, from the batch the module has seen
        (`batches_seen`, restored from the checkpoint before Lightning asks for the loader). `trainer`:
        None outside fit (one rank, from batch 0)."""
        module = trainer.lightning_module if trainer is not None else None
        return cls(
            items,
            batch_size,
            seed,
            start=getattr(module, "batches_seen", 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            keep_partial=keep_partial,
        )

    def __iter__(self) -> Iterator[list[Item]]:
        while True:
            yield self.batch(self.position)
            self.position += 1

    def batch(self, k: int) -> list[Item]:
        """The k-th batch of this rank."""
        epoch, index = divmod(k, self.batches_per_epoch)
        order = self._order(epoch)
        chunk = order[index * self.batch_size : (index + 1) * self.batch_size]
        return [self.items[i] for i in chunk]

    def _order(self, epoch: int) -> list[int]:
        if self._epoch is None or self._epoch[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed)
            for _ in range(epoch):  # the draws of the epochs before
                _draw_epoch(len(self.items), generator, self._exhausts_sampler)
            permutation = _draw_epoch(len(self.items), generator, self._exhausts_sampler)
            self._epoch = (epoch, permutation[self.rank :: self.world_size])
        return self._epoch[1]


def _draw_epoch(n: int, generator: torch.Generator, exhausts_sampler: bool) -> list[int]:
    """One epoch of a shuffling DataLoader's draws as Lightning iterates it: the iterator's base seed and
    RandomSampler's permutation. Lightning stops after len(loader) batches; the sampler reaches its
    (empty) remainder draw only when the epoch's last batch is a short one, which the batch sampler
    yields after the sampler is exhausted."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    permutation = torch.randperm(n, generator=generator).tolist()
    if exhausts_sampler:
        torch.randperm(n, generator=generator)
    return permutation
