"""The reasoning reward model interface: batched scores for (problem, reasoning) pairs.

A score is in [0, 1]; `None` marks a failed item (the reward masks and counts it, never guesses).
Every implementation — oracle, constant, the learned rubric model, an HTTP service — scores a whole
batch per call.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planlift.resumable import Resumable
from planlift.tasks.base import Problem, Task

MATH_DIMENSIONS = (
    "problem_understanding",
    "solution_strategy",
    "step_coherence",
    "calculation_correctness",
    "answer_support",
)
CODE_DIMENSIONS = ("task_understanding", "plan_quality", "step_coherence", "action_support", "non_leakage")


@dataclass(frozen=True)
class RMItem:
    problem: Problem
    reasoning: str
    task_name: str
    task_type: str


def rubric_score(
    dimensions: Mapping[str, float], total: float, weights: Mapping[str, float] | None = None
) -> float:
    """0.5 * derived + 0.5 * total, where derived = sum_d w_d * E_d / 4 (E_d on the 0..4 label scale)."""
    weights = weights or {name: 1.0 / len(dimensions) for name in dimensions}
    derived = sum(weights[name] * value for name, value in dimensions.items()) / 4.0
    return 0.5 * derived + 0.5 * total


class ReasoningRM(Resumable, abc.ABC):
    """Scores reasonings. `resume_fields`: the counters a resumed run continues (planlift.resumable)."""

    def prepare(self, task: Task) -> None:
        """Called once by the reward's constructor with the task it scores: raise a ConfigError if this RM
        cannot score its reasonings, keep what scoring needs. The default accepts every task."""
        return None

    @abc.abstractmethod
    def score(self, items: Sequence[RMItem]) -> list[float | None]:
        """One score in [0, 1] (or None on failure) per item."""

    def metrics(self) -> dict[str, float]:
        """Counters for the training log (`train/rm/<name>`): cumulative over the run. Default: none."""
        return {}
