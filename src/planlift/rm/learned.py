"""The trained rubric RM as a `ReasoningRM`: batched, in-process scoring (`rm=learned rm.path=...`).

One forward per batch of `batch_size` inputs (sorted by length to cut padding), under `torch.no_grad`,
in eval mode, on this rank's GPU when there is one (the executors' convention), else the CPU.
A batch whose forward fails (e.g. out of memory) yields None for its items: the reward masks and
counts them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from planlift.errors import ConfigError
from planlift.rm.base import CODE_DIMENSIONS, MATH_DIMENSIONS, ReasoningRM, RMItem
from planlift.rubric_rm.inputs import encode_rm_input, pad_batch, shortest_max_length
from planlift.rubric_rm.model import RubricOutput, RubricRewardModel

if TYPE_CHECKING:
    from planlift.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RMInput:
    """One input on the service's contract: `task_name` is the `<task>` tag, `task_type` the `<type>` tag."""

    problem: str
    reasoning: str
    task_name: str
    task_type: str
    tests: str | None = None


class LearnedRM(ReasoningRM):
    """Args:
    path: a reward-model directory (src/train_rm.py exports `<run>/reward_model`; the authors'
        released checkpoints load too).
    max_length: token budget per input (the problem is cut first).
    batch_size: inputs per forward.
    device: "auto" (this rank's GPU, else CPU) or a torch device string.
    dtype: float32 | bfloat16 | float16 for the backbone (the heads stay float32).
    task_name: the `<task>` tag; null = the item's task type ("math" / "code"), as the RM was trained.
    """

    resume_fields = ("forwards", "failed_items")

    def __init__(
        self,
        path: str | None = None,
        max_length: int = 1024,
        batch_size: int = 32,
        device: str = "auto",
        dtype: str = "float32",
        task_name: str | None = None,
    ) -> None:
        if not path:
            raise ConfigError(
                "rm=learned needs rm.path=<reward-model directory> (python src/train_rm.py exports one "
                "to <run dir>/reward_model)"
            )
        if max_length < 8:
            raise ConfigError(f"rm.max_length must be >= 8, got {max_length}")
        if batch_size < 1:
            raise ConfigError(f"rm.batch_size must be >= 1, got {batch_size}")
        from planlift.models.devices import resolve_device

        self.path = str(path)
        self.model = RubricRewardModel.from_pretrained(path, dtype, "rm.path")
        self.model.to(resolve_device(device, "rm.device"))
        self.model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = self.model.tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.task_name = task_name
        self.forwards = 0
        self.failed_items = 0

    def metrics(self) -> dict[str, float]:
        return {"forwards": float(self.forwards), "failed_items": float(self.failed_items)}

    def prepare(self, task: Task) -> None:
        """The RM's rubric must be the task type's: a math rubric does not score code plans, nor the reverse."""
        names = tuple(self.model.dimension_names)
        other = MATH_DIMENSIONS if task.task_type == "code" else CODE_DIMENSIONS
        if names == tuple(other):
            raise ConfigError(
                f"rm.path={self.path!r} scores the rubric {list(names)}, not the one of task={task.name!r} "
                f"(a {task.task_type} task): use an RM trained for {task.task_type}"
            )
        shortest = shortest_max_length(self.tokenizer, self.task_name or task.task_type, task.task_type)
        if self.max_length < shortest:
            raise ConfigError(
                f"rm.max_length={self.max_length} leaves no room for the reasoning: the RM's input frame for "
                f"task={task.name!r} takes {shortest - 1} tokens (rm.max_length >= {shortest})"
            )

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, inputs: Sequence[RMInput], max_length: int | None = None) -> list[list[int]]:
        budget = max_length or self.max_length
        return [
            encode_rm_input(self.tokenizer, x.problem, x.reasoning, x.task_name, x.task_type, budget, x.tests)
            for x in inputs
        ]

    @torch.no_grad()
    def forward(self, sequences: Sequence[Sequence[int]]) -> RubricOutput:
        """One forward over token sequences (padded here)."""
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids, attention_mask = pad_batch(sequences, pad_id, self.tokenizer.padding_side or "right")
        self.forwards += 1
        return self.model(input_ids.to(self.device), attention_mask.to(self.device))

    def score_inputs(
        self, inputs: Sequence[RMInput], max_length: int | None = None, batch_size: int | None = None
    ) -> list[float | None]:
        """Scores in [0, 1], None for the items of a batch whose forward failed."""
        sequences = self.encode(inputs, max_length)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        size = batch_size or self.batch_size
        scores: list[float | None] = [None] * len(sequences)
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            try:
                values = self.forward([sequences[i] for i in chunk]).score.float().cpu().tolist()
            except RuntimeError:
                log.exception("learned RM: forward failed for a batch of %d", len(chunk))
                self.failed_items += len(chunk)
                continue
            for index, value in zip(chunk, values, strict=True):
                scores[index] = value
        return scores

    def to_input(self, item: RMItem) -> RMInput:
        return RMInput(item.problem.text, item.reasoning, self.task_name or item.task_type, item.task_type)

    def score(self, items: Sequence[RMItem]) -> list[float | None]:
        return self.score_inputs([self.to_input(item) for item in items])
