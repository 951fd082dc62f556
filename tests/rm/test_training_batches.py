"""The RM's training batches: endless, resumable at any batch, and what the shuffling DataLoader gave runs
from before resuming existed (same groups, same drawn positives and negatives, same order)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from planlift.batch_stream import BatchStream
from planlift.models import build_char_tokenizer
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm_groups import ProceduralGroupSource, build_groups, read_groups
from planlift.rubric_rm.data import GroupCollator, TrainingBatches
from planlift.tasks import ProceduralTask
from tests.test_data_stream import lightning_draws


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    out = tmp_path_factory.mktemp("groups")
    task = ProceduralTask(sizes={"train": 12, "validation": 2, "test": 0})
    build_groups(ProceduralGroupSource(task, sizes={"train": 12, "dev": 2}), out)
    return read_groups(out / "train.jsonl", MATH_DIMENSIONS)


def collator() -> GroupCollator:
    return GroupCollator(build_char_tokenizer(), MATH_DIMENSIONS, num_negatives=3, max_length=96, seed=5)


def batches(groups, batch_size: int, start: int = 0) -> TrainingBatches:
    return TrainingBatches(
        BatchStream(groups, batch_size, seed=5, start=start, keep_partial=True), collator()
    )


def rows(batch: dict) -> tuple:
    """What a batch is made of, comparable with ==."""
    return batch["input_ids"].tolist(), batch["kinds"], batch["gold_total"].tolist()


@pytest.mark.parametrize(("size", "batch_size"), [(12, 5), (12, 4), (3, 5)])
def test_the_batches_lightning_drew_from_the_old_dataloader(groups, size, batch_size):
    """A real Lightning fit over the DataLoader that GroupsDataModule.train_dataloader() returned before:
    a short last batch (12 = 2 x 5 + 2), none (12 = 3 x 4), fewer groups than a batch."""
    old = DataLoader(
        groups[:size],
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collator(),
        generator=torch.Generator().manual_seed(5),
    )
    seen = lightning_draws(old, record=rows)
    assert [rows(b) for b in itertools.islice(batches(groups[:size], batch_size), len(seen))] == seen


def test_resuming_at_any_batch_continues_the_sequence(groups):
    full = [rows(b) for b in itertools.islice(batches(groups, 5), 10)]  # 3 batches an epoch: 3+ epochs
    assert len({tuple(map(str, b[1])) for b in full}) > 1
    for start in (1, 3, 7):
        assert [rows(b) for b in itertools.islice(batches(groups, 5, start), 10 - start)] == full[start:]
