"""The training batch stream: resumable at any batch, the same order as a shuffling DataLoader, sharded by rank."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from planlift.batch_stream import BatchStream


def take(stream: BatchStream, count: int) -> list[list[int]]:
    return list(itertools.islice(iter(stream), count))


def old_loader(size: int, batch: int, seed: int) -> DataLoader:
    """The shuffling DataLoader that ProblemDataModule.train_dataloader() returned before the stream."""
    return DataLoader(
        list(range(size)),
        batch_size=batch,
        shuffle=True,
        drop_last=size >= batch,
        collate_fn=list,
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize(("size", "batch"), [(50, 8), (48, 8), (5, 8)])
def test_same_order_as_a_shuffling_dataloader(size, batch):
    """Runs from before the stream existed keep their data order (and their documented results)."""
    loader = old_loader(size, batch, seed=7)
    # as Lightning iterates it: a fresh iterator per epoch, len(loader) batches taken
    epochs = [batch for _ in range(3) for batch in itertools.islice(iter(loader), len(loader))]
    assert take(BatchStream(list(range(size)), batch, seed=7), len(epochs)) == epochs


def test_resuming_at_any_position_continues_the_sequence():
    problems = list(range(30))
    full = take(BatchStream(problems, 4, seed=1), 20)
    for start in (0, 3, 7, 13):
        assert take(BatchStream(problems, 4, seed=1, start=start), 20 - start) == full[start:]
    stream = BatchStream(problems, 4, seed=1)
    take(stream, 5)
    assert stream.position == 4  # the fifth batch is drawn, not yet passed


def test_ranks_share_each_epoch_without_overlap():
    problems = list(range(40))
    ranks = [take(BatchStream(problems, 5, seed=0, rank=r, world_size=2), 4) for r in range(2)]
    first_epoch = [set(itertools.chain.from_iterable(batches)) for batches in ranks]
    assert first_epoch[0].isdisjoint(first_epoch[1]) and len(first_epoch[0] | first_epoch[1]) == 40


def lightning_draws(loader: DataLoader, epochs: int = 4, record=list) -> list:
    """The batches a real Lightning fit of `epochs` epochs takes from `loader`, each passed through `record`."""
    import pytorch_lightning as pl

    seen: list = []

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            seen.append(record(batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Recorder(), train_dataloaders=loader)
    assert len(seen) == epochs * len(loader)
    return seen


@pytest.mark.parametrize(("size", "batch"), [(8, 8), (20, 8), (5, 8)])
def test_same_batches_as_lightning_drew_from_the_old_loader(size, batch):
    """A real Lightning loop over the shuffling DataLoader that train_dataloader() used to return."""
    seen = lightning_draws(old_loader(size, batch, seed=0))
    assert take(BatchStream(list(range(size)), batch, seed=0), len(seen)) == seen


def test_a_zero_val_batch_size_names_the_key(procedural_task):
    from planlift.data import ProblemDataModule
    from planlift.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.val_batch_size must be >= 1, got 0"):
        ProblemDataModule(procedural_task, val_batch_size=0)


def test_more_problems_per_step_than_training_problems(caplog):
    """BatchStream makes each step one short batch of every problem: a warning naming both numbers; a rank
    with no problem at all is an error."""
    from types import SimpleNamespace

    from planlift.data import ProblemDataModule
    from planlift.errors import ConfigError
    from planlift.tasks import ProceduralTask

    task = ProceduralTask(sizes={"train": 5, "validation": 2, "test": 0})
    with caplog.at_level("WARNING", logger="planlift.data"):
        stream = ProblemDataModule(task, problems_per_step=8).train_dataloader()
        assert len(stream.batch(0)) == 5
        assert (
            "data.problems_per_step=8 is more than the 5 training problems (task 'procedural')" in caplog.text
        )
        caplog.clear()
        ProblemDataModule(task, problems_per_step=5).train_dataloader()
        assert not caplog.text
        ProblemDataModule(task, problems_per_step=4, train_limit=3).train_dataloader()
        assert (
            "problems_per_step=4 is more than the 3 training problems (task 'procedural', data.train_limit=3)"
            in caplog.text
        )
        caplog.clear()
        module = ProblemDataModule(task, problems_per_step=4)
        module.trainer = SimpleNamespace(lightning_module=None, global_rank=1, world_size=2)
        module.train_dataloader()
        assert "a rank's share (3 at most) of the 5 training problems over 2 ranks" in caplog.text

    module = ProblemDataModule(task, problems_per_step=1, train_limit=1)
    module.trainer = SimpleNamespace(lightning_module=None, global_rank=0, world_size=2)
    with pytest.raises(ConfigError, match=r"1 training problem\(s\) \(.*data.train_limit=1\) for 2 ranks"):
        module.train_dataloader()


def test_validation_problems_are_cut_to_whole_shares_so_none_counts_twice(caplog):
    """Lightning shards validation with a DistributedSampler that pads the last share with problems from
    the start; cut to a multiple of the ranks, every problem is judged exactly once."""
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    from planlift.data import ProblemDataModule
    from planlift.tasks import ProceduralTask

    task = ProceduralTask(sizes={"train": 4, "validation": 8, "test": 0})
    module = ProblemDataModule(task, val_problems=8)
    module.trainer = SimpleNamespace(lightning_module=None, global_rank=0, world_size=3)
    with caplog.at_level("WARNING", logger="planlift.distributed"):
        dataset = module.val_dataloader().dataset
    assert (
        "val/* counts 6 validation problems, not 8" in caplog.text and "count 1 of them twice" in caplog.text
    )
    shares = [
        list(DistributedSampler(dataset, num_replicas=3, rank=rank, shuffle=False)) for rank in range(3)
    ]
    judged = sorted(index for share in shares for index in share)
    assert judged == list(range(6)) and [p.id for p in dataset] == [
        p.id for p in list(task.problems("validation"))[:6]
    ]
    module.trainer = SimpleNamespace(lightning_module=None, global_rank=0, world_size=1)
    assert len(module.val_dataloader().dataset) == 8
