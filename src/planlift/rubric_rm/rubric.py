"""Written rubric rules: the labels a negative of each kind gets (5 dimensions on 0..4, total in [0, 1]).

The rules follow what each perturbation breaks (docs/reasoning_rm.md has the table with reasons).
Dimension order is `MATH_DIMENSIONS`: problem_understanding, solution_strategy, step_coherence,
calculation_correctness, answer_support. The positive (a reference trace) gets 4 everywhere and total 1.0,
as the authors label their positives.

A judge labeler (`planlift.rm_groups.judge`) can replace these rules; its labels use the authors'
mapping from a 0-10 judge score: label = min(4, floor(score / 2)), total = score / 10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planlift.errors import ConfigError
from planlift.rm.base import MATH_DIMENSIONS

NUM_LABELS = 5
TOTAL = "total"

# kind -> ((problem_understanding, solution_strategy, step_coherence, calculation_correctness,
#           answer_support), total)
MATH_RUBRIC_RULES: dict[str, tuple[tuple[int, int, int, int, int], float]] = {
    "positive": ((4, 4, 4, 4, 4), 1.0),
    # procedural-task perturbations
    "arithmetic_slip": ((4, 4, 2, 2, 2), 0.45),
    "propagated_slip": ((4, 4, 3, 1, 1), 0.35),
    "skipped_step": ((4, 2, 1, 3, 2), 0.4),
    "wrong_operand": ((2, 3, 3, 2, 1), 0.35),
    "premature_answer": ((3, 1, 3, 3, 0), 0.25),
    "hallucinated_step": ((2, 3, 2, 4, 2), 0.55),
    "answer_leaked": ((1, 0, 0, 0, 0), 0.1),
    "reordered_steps": ((4, 3, 1, 4, 3), 0.6),
    # GSM8K perturbations (premature_answer and answer_leaked are shared with the procedural task)
    "changed_number": ((1, 4, 3, 3, 1), 0.35),
    "swapped_operation": ((3, 1, 3, 3, 1), 0.3),
    "dropped_step": ((4, 2, 1, 4, 2), 0.45),
    "unsupported_conclusion": ((4, 4, 2, 1, 0), 0.3),
    "irrelevant_detour": ((3, 2, 2, 4, 3), 0.6),
}


@dataclass(frozen=True)
class LabelRequest:
    """One candidate to label. `kind` is the negative kind ("positive" for the reference trace)."""

    problem_id: str
    problem: str
    reference: str
    reasoning: str
    kind: str


def rubric_from_scores(names: Sequence[str], labels: Sequence[int], total: float) -> dict[str, int | float]:
    """{name: label, ..., "total": total} after range checks."""
    if len(names) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(names)} dimensions")
    for name, label in zip(names, labels, strict=True):
        if not 0 <= int(label) < NUM_LABELS:
            raise ValueError(f"rubric label {name}={label} outside 0..{NUM_LABELS - 1}")
    if not 0.0 <= total <= 1.0:
        raise ValueError(f"rubric total {total} outside [0, 1]")
    rubric: dict[str, int | float] = {name: int(label) for name, label in zip(names, labels, strict=True)}
    rubric[TOTAL] = round(float(total), 6)
    return rubric


def judge_scores_to_rubric(names: Sequence[str], scores: Mapping[str, float], total: float) -> dict:
    """The authors' mapping of 0-10 judge scores: label = min(4, floor(score / 2)), total = score / 10."""
    labels = [min(NUM_LABELS - 1, int(float(scores[name]) // 2)) for name in names]
    return rubric_from_scores(names, labels, min(1.0, max(0.0, float(total) / 10.0)))


class RuleLabeler:
    """Labels a candidate by its kind, from `MATH_RUBRIC_RULES` (or a table given in the config)."""

    name = "rules"

    def __init__(
        self,
        dimension_names: Sequence[str] = MATH_DIMENSIONS,
        rules: Mapping[str, Sequence] | None = None,
    ) -> None:
        self.dimension_names = tuple(dimension_names)
        if len(self.dimension_names) != NUM_LABELS:
            raise ConfigError(f"labeler.dimension_names needs 5 names, got {list(self.dimension_names)}")
        table = dict(MATH_RUBRIC_RULES)
        for kind, rule in (rules or {}).items():
            labels, total = rule
            table[kind] = (tuple(int(x) for x in labels), float(total))
        for kind, (labels, total) in table.items():
            try:
                rubric_from_scores(self.dimension_names, labels, total)
            except ValueError as error:
                raise ConfigError(f"labeler.rules.{kind}: {error}") from None
        self.table = table

    def label(self, kind: str) -> dict[str, int | float]:
        if kind not in self.table:
            raise ConfigError(f"no rubric rule for negative kind {kind!r}; known: {sorted(self.table)}")
        labels, total = self.table[kind]
        return rubric_from_scores(self.dimension_names, labels, total)

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[dict | None]:
        return [self.label(request.kind) for request in requests]
