"""Reasoning RMs that need no training: the procedural oracle and a constant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from planlift.errors import ConfigError
from planlift.rm.base import MATH_DIMENSIONS, ReasoningRM, RMItem, rubric_score
from planlift.tasks.procedural_trace import analyze_trace

if TYPE_CHECKING:
    from planlift.tasks.base import Task


class ConstantRM(ReasoningRM):
    """Every reasoning gets `value` (with reward=grounded and value=1 this is the uplift-only ablation)."""

    def __init__(self, value: float = 0.5) -> None:
        if not 0 <= value <= 1:
            raise ConfigError(f"rm.value must be in [0, 1], got {value}")
        self.value = value

    def score(self, items: Sequence[RMItem]) -> list[float | None]:
        return [self.value] * len(items)


class OracleRM(ReasoningRM):
    """The rubric computed from the ground-truth execution of a procedural problem (an upper bound).

    Dimensions on the 0..4 label scale:
      problem_understanding   4 x share of step lines that name a state the program has
      solution_strategy       4 x min(executed, expected) / max(executed, expected)
      step_coherence          4 x share of non-empty lines that parse as steps or answers
      calculation_correctness 4 x step accuracy
      answer_support          4 if S_N is computed correctly and no answer is stated early, else 0
    total = step accuracy; score = 0.5 * derived + 0.5 * total.
    """

    def __init__(self) -> None:
        self.leave = 0  # the last k states are the executor's (task.executor_steps)

    def prepare(self, task: Task) -> None:
        if not task.has_ground_truth_states:
            raise ConfigError(
                f"rm=oracle needs ground-truth states (task=procedural or procedural_benchmark); "
                f"got task={task.name!r}: use rm=learned, rm=http or rm=constant"
            )
        self.leave = getattr(task, "executor_steps", 0)

    def score(self, items: Sequence[RMItem]) -> list[float | None]:
        return [self._score(item) for item in items]

    def _score(self, item: RMItem) -> float:
        meta = item.problem.meta
        if "program" not in meta:
            raise ConfigError(
                f"rm=oracle needs ground-truth states (task=procedural); got task {item.task_name!r}"
            )
        analysis = analyze_trace(item.reasoning, meta["program"], meta["states"], leave=self.leave)
        lines = analysis.executed_steps + analysis.unparsed_lines
        expected, executed = analysis.expected_steps, analysis.executed_steps
        supported = analysis.final_state_correct and not (analysis.premature_answer or analysis.leaked_answer)
        dimensions = dict(
            zip(
                MATH_DIMENSIONS,
                (
                    4.0 * (1 - analysis.hallucinated_steps / executed) if executed else 0.0,
                    4.0 * min(executed, expected) / max(executed, expected) if executed else 0.0,
                    4.0 * executed / lines if lines else 0.0,
                    4.0 * analysis.step_accuracy,
                    4.0 if supported else 0.0,
                ),
                strict=True,
            )
        )
        return rubric_score(dimensions, total=analysis.step_accuracy)
