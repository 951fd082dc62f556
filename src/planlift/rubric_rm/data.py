"""Batches of TraceLift-Groups for the RM: each group gives 1 positive + `num_negatives` negatives.

Rows are grouped per problem ([g0 pos, g0 neg1..negK-1, g1 pos, ...]), so scores reshape to [G, K]
with the positive in column 0. Training batches are endless and resume at any batch (`TrainingBatches`:
the checkpoint carries the position, `RubricRMModule.batches_seen`); training draws the positive and the
negatives with a seeded stream;
evaluation draws them from `Random(f"{seed}/{problem_id}")`, so every evaluation of a group sees the
same negatives whatever the batch order (the authors' evaluation negatives were random).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from planlift.batch_stream import BatchStream
from planlift.distributed import whole_shares
from planlift.errors import ConfigError, DataError
from planlift.rm_groups.schema import Group, read_groups
from planlift.rubric_rm.heldout import refuse_heldout
from planlift.rubric_rm.inputs import encode_reasoning_only, encode_rm_input, pad_batch, reasoning_token_count
from planlift.rubric_rm.rubric import TOTAL

log = logging.getLogger(__name__)

RENDERINGS = ("full", "reasoning")


def first_difference(tokens: Sequence[int], reference: Sequence[int]) -> int:
    """Index of the first token that differs from `reference`; len(tokens) if none does (a prefix
    of the reference, or equal to it); the reference's length if `tokens` continues past it."""
    for index, (token, expected) in enumerate(zip(tokens, reference, strict=False)):
        if token != expected:
            return index
    return len(tokens) if len(tokens) <= len(reference) else len(reference)


class GroupCollator:
    """Groups -> a tokenized batch.

    Output keys: input_ids / attention_mask [G*K, T]; reasoning_mask [G*K, T] (1 on the reasoning
    and its closing tag); departs_at [G*K] (the position of the first reasoning token in which a
    candidate differs from its group's positive; past its last token if it never does);
    dimension_labels [G*K, D] (long); gold_total [G*K]; kinds (list of G*K
    negative kinds, "positive" for column 0); group_size K.
    `render`: "full" (the authors' input, what the RM scores) or "reasoning" (the reasoning text
    alone, no tags; for the first stage of a language-model warm-up of a small backbone).
    """

    def __init__(
        self,
        tokenizer,
        dimension_names: Sequence[str],
        num_negatives: int = 4,
        max_length: int = 512,
        task_name: str | None = None,
        seed: int = 0,
        fixed: bool = False,
        render: str = "full",
    ) -> None:
        if num_negatives < 1:
            raise ConfigError(f"rm_data.num_negatives must be >= 1, got {num_negatives}")
        if render not in RENDERINGS:
            raise ConfigError(f"rm_data.render must be one of {RENDERINGS}, got {render!r}")
        self.tokenizer = tokenizer
        self.dimension_names = list(dimension_names)
        self.num_negatives = num_negatives
        self.max_length = max_length
        self.task_name = task_name
        self.seed = seed
        self.fixed = fixed
        self.render = render
        self.stream = random.Random(seed)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def choose(self, group: Group) -> list[tuple[dict, str]]:
        """[(candidate, kind)]: the positive first, then the negatives (with replacement if too few)."""
        rng = random.Random(f"{self.seed}/{group['problem_id']}") if self.fixed else self.stream
        positive = rng.choice(group["positive_pool"])
        bank = group["negative_bank"]
        if len(bank) >= self.num_negatives:
            negatives = rng.sample(bank, self.num_negatives)
        else:
            negatives = [rng.choice(bank) for _ in range(self.num_negatives)]
        return [(positive, "positive")] + [(n, n.get("negative_kind") or "negative") for n in negatives]

    def encode(self, group: Group, reasoning: str) -> list[int]:
        if self.render == "reasoning":
            return encode_reasoning_only(self.tokenizer, reasoning, self.max_length)
        task_name = self.task_name or group["task_type"]
        return encode_rm_input(
            self.tokenizer,
            group["problem"],
            reasoning,
            task_name,
            group["task_type"],
            self.max_length,
            group.get("tests"),
        )

    def __call__(self, groups: Sequence[Group]) -> dict[str, Any]:
        sequences, spans, departures, labels, totals, kinds = [], [], [], [], [], []
        for group in groups:
            positive_span: list[int] = []
            for candidate, kind in self.choose(group):
                ids = self.encode(group, candidate["reasoning"])
                reasoning = min(reasoning_token_count(self.tokenizer, candidate["reasoning"]), len(ids))
                span = ids[len(ids) - reasoning :]
                if kind == "positive":
                    positive_span = span
                sequences.append(ids)
                spans.append([0] * (len(ids) - reasoning) + [1] * reasoning)
                departures.append(len(ids) - reasoning + first_difference(span, positive_span))
                rubric = candidate["rubric"]
                labels.append([int(rubric[name]) for name in self.dimension_names])
                totals.append(float(rubric[TOTAL]))
                kinds.append(kind)
        input_ids, attention_mask = pad_batch(sequences, self.pad_id, self.tokenizer.padding_side)
        reasoning_mask, _ = pad_batch(spans, 0, self.tokenizer.padding_side)
        if self.tokenizer.padding_side == "left":  # positions shift by each row's padding
            departures = [
                d + input_ids.shape[1] - len(ids) for d, ids in zip(departures, sequences, strict=True)
            ]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "reasoning_mask": reasoning_mask,
            "departs_at": torch.tensor(departures, dtype=torch.long),
            "dimension_labels": torch.tensor(labels, dtype=torch.long),
            "gold_total": torch.tensor(totals, dtype=torch.float32),
            "kinds": kinds,
            "group_size": 1 + self.num_negatives,
        }


class GroupsDataModule(pl.LightningDataModule):
    """Train and dev TraceLift-Groups files (`python src/build_groups.py` writes them).

    Args:
        train_path / dev_path: the JSONL files.
        tokenizer / dimension_names: from the reward model (injected by src/train_rm.py).
        num_negatives: negatives per group in a batch (authors: 4).
        groups_per_batch / dev_groups_per_batch: groups per training / evaluation batch.
        max_length: token budget per input (the problem is cut first).
        task_name: the `<task>` tag (null: the group's task_type, e.g. "math").
        limit_train / limit_dev: use only the first N groups (null: all).
        padding_side: "right" or "left" (pooling handles both).
        render: "full" (default: the authors' input) or "reasoning" (the reasoning alone, train and dev;
            only for a language-model warm-up stage, see docs/reasoning_rm.md).
    """

    def __init__(
        self,
        train_path: str,
        dev_path: str,
        tokenizer,
        dimension_names: Sequence[str],
        num_negatives: int = 4,
        groups_per_batch: int = 4,
        dev_groups_per_batch: int = 8,
        max_length: int = 512,
        task_name: str | None = None,
        limit_train: int | None = None,
        limit_dev: int | None = None,
        padding_side: str = "right",
        seed: int = 0,
        render: str = "full",
    ) -> None:
        super().__init__()
        if groups_per_batch < 1 or dev_groups_per_batch < 1:
            raise ConfigError("rm_data.groups_per_batch and rm_data.dev_groups_per_batch must be >= 1")
        if padding_side not in ("left", "right"):
            raise ConfigError(f"rm_data.padding_side must be 'left' or 'right', got {padding_side!r}")
        if render not in RENDERINGS:
            raise ConfigError(f"rm_data.render must be one of {RENDERINGS}, got {render!r}")
        self.train_path = train_path
        self.dev_path = dev_path
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = padding_side
        self.dimension_names = list(dimension_names)
        self.num_negatives = num_negatives
        self.groups_per_batch = groups_per_batch
        self.dev_groups_per_batch = dev_groups_per_batch
        self.max_length = max_length
        self.task_name = task_name
        self.limit_train = limit_train
        self.limit_dev = limit_dev
        self.seed = seed
        self.render = render
        self.train_groups: list[Group] = []
        self.dev_groups: list[Group] = []

    def _read(self, path: str, limit: int | None) -> list[Group]:
        try:
            groups = read_groups(path, self.dimension_names)
        except DataError as error:
            if "no such data file" in str(error):
                raise DataError(f"{error} (build it: python src/build_groups.py groups=<source>)") from None
            raise
        return groups[:limit] if limit is not None else groups

    def setup(self, stage: str | None = None) -> None:
        if not self.train_groups and stage in (None, "fit"):
            self.train_groups = self._read(self.train_path, self.limit_train)
        if not self.dev_groups:
            self.dev_groups = self._read(self.dev_path, self.limit_dev)
            shared = {g["problem_id"] for g in self.train_groups} & {g["problem_id"] for g in self.dev_groups}
            if shared:
                raise DataError(f"{self.dev_path}: {len(shared)} dev problems are also in {self.train_path}")
            for path, groups in ((self.train_path, self.train_groups), (self.dev_path, self.dev_groups)):
                refuse_heldout(((g["problem_id"], g["problem"]) for g in groups), str(path))
                short = sum(len(g["negative_bank"]) < self.num_negatives for g in groups)
                if short:
                    log.warning(
                        "%s: %d of %d groups hold fewer than rm_data.num_negatives=%d negatives: theirs are drawn "
                        "with replacement (a negative can appear twice in one group)",
                        path,
                        short,
                        len(groups),
                        self.num_negatives,
                    )

    def collator(self, fixed: bool) -> GroupCollator:
        return GroupCollator(
            self.tokenizer,
            self.dimension_names,
            self.num_negatives,
            self.max_length,
            self.task_name,
            seed=self.seed,
            fixed=fixed,
            render=self.render,
        )

    def train_dataloader(self) -> TrainingBatches:
        stream = BatchStream.for_trainer(
            self.train_groups, self.groups_per_batch, self.seed, self.trainer, keep_partial=True
        )
        return TrainingBatches(stream, self.collator(fixed=False))

    def val_dataloader(self) -> DataLoader:
        ranks = self.trainer.world_size if self.trainer else 1
        return DataLoader(
            whole_shares(self.dev_groups, ranks, "dev groups", "rm_data.limit_dev (or the dev file)"),
            batch_size=self.dev_groups_per_batch,
            shuffle=False,
            collate_fn=self.collator(fixed=True),
        )


class TrainingBatches:
    """Collated training batches, endless and resumable: the groups of batch k come from `stream`, and the
    collator's draws (positive and negatives) continue as if batches 0..k-1 had been collated. A run that
    starts at batch 0 sees what a shuffling DataLoader over the groups gave it (before resuming existed)."""

    def __init__(self, stream: BatchStream[Group], collator: GroupCollator) -> None:
        self.stream = stream
        self.collator = collator
        for k in range(stream.position):  # replay the choices only; nothing is tokenized
            for group in stream.batch(k):
                collator.choose(group)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for groups in self.stream:
            yield self.collator(groups)
