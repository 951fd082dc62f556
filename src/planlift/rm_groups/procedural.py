"""Localized negatives for the procedural task: each breaks one thing in the exact step trace.

A trace line is `S<i>=<a><op><b>=<value>` (`ProceduralTask.gold_reasoning`). Every negative stays on
task (same program, same line format) and differs from the positive in one place. The positive is the
planner's share of the program, S3..S_M with M = N - `executor_steps` (the executor computes the rest), so
every negative is built over those steps too: otherwise its length alone would tell it from the positive.

    arithmetic_slip     one step states a wrong value; later steps still use the right one
    propagated_slip     one step states a wrong value and every later step builds on it
    skipped_step        one intermediate step line is missing
    wrong_operand       one step reads another earlier state's value; later steps build on it
    premature_answer    the trace stops before S_M and states the last value as the answer
    hallucinated_step   an extra step, on S_M, for a state the program does not have (S_(N+1))
    answer_leaked       the correct answer with no steps
    reordered_steps     two consecutive steps swapped (a state used before it is computed)

`procedural_negatives` returns the applicable kinds, each drawn with `rng`, never equal to the positive.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from planlift.tasks.base import Problem
from planlift.tasks.procedural import ANSWER_PREFIX, ProceduralTask, Step, format_number

KINDS = (
    "arithmetic_slip",
    "propagated_slip",
    "skipped_step",
    "wrong_operand",
    "premature_answer",
    "hallucinated_step",
    "answer_leaked",
    "reordered_steps",
)


def _line(step: Step, values: Sequence[float], a_value: float | None = None) -> str:
    a = values[step.a - 1] if a_value is None else a_value
    return (
        f"S{step.index}={format_number(a)}{step.op}{format_number(values[step.b - 1])}"
        f"={format_number(values[step.index - 1])}"
    )


def _text(lines: Sequence[str]) -> str:
    return "\n".join(lines) + "\n"


class ProceduralPerturber:
    """Builds the negatives of one procedural problem."""

    def __init__(self, task: ProceduralTask, problem: Problem, rng: random.Random) -> None:
        self.task = task
        self.program = problem.meta["program"]
        self.states = list(problem.meta["states"])
        self.planned_length = task.planned_length  # M: the positive's last state
        self.steps = tuple(s for s in self.program.steps if s.index <= self.planned_length)
        self.rng = rng

    def _wrong_value(self, value: float) -> float:
        if self.task.modulus is not None:
            return float((int(value) + self.rng.randint(1, self.task.modulus - 1)) % self.task.modulus)
        delta = self.rng.choice((1, 2, 3, 5, 10)) * self.rng.choice((-1, 1))
        if self.task.number_type == "float" or value != int(value):
            delta = delta / 10
        return round(value + delta, 3)

    def _execute(self, override: Callable[[Step, list[float]], float | None]) -> list[float] | None:
        """States S1..S_M when `override(step, values)` replaces a step's value (None = computed normally)."""
        values = [self.program.x, self.program.y]
        for step in self.steps:
            forced = override(step, values)
            # _apply is the task's own arithmetic (modulus and rounding included)
            value = (
                forced
                if forced is not None
                else self.task._apply(values[step.a - 1], step.op, values[step.b - 1])
            )
            if value is None:  # a division by zero downstream of the change
                return None
            values.append(value)
        return values

    def _lines(self, values: Sequence[float]) -> list[str]:
        return [_line(step, values) for step in self.steps]

    def _pick_step(self, last_allowed: bool = True) -> Step | None:
        candidates = list(self.steps if last_allowed else self.steps[:-1])
        return self.rng.choice(candidates) if candidates else None

    # ---- the kinds ---------------------------------------------------------------------------------

    def arithmetic_slip(self) -> str | None:
        step = self._pick_step()
        lines = self._lines(self.states)
        wrong = list(self.states)
        wrong[step.index - 1] = self._wrong_value(self.states[step.index - 1])
        lines[step.index - 3] = _line(step, wrong)
        return _text(lines)

    def propagated_slip(self) -> str | None:
        step = self._pick_step(last_allowed=len(self.steps) == 1)
        wrong = self._wrong_value(self.states[step.index - 1])
        values = self._execute(lambda s, _: wrong if s.index == step.index else None)
        return None if values is None else _text(self._lines(values))

    def skipped_step(self) -> str | None:
        step = self._pick_step(last_allowed=False)
        if step is None:
            return None
        lines = self._lines(self.states)
        del lines[step.index - 3]
        return _text(lines)

    def wrong_operand(self) -> str | None:
        options = []
        for step in self.steps:
            for other in range(1, step.index):
                if other not in (step.a, step.b) and self.states[other - 1] != self.states[step.a - 1]:
                    options.append((step, other))
        if not options:
            return None
        step, other = self.rng.choice(options)
        misread = Step(step.index, other, step.op, step.b)
        values = self._execute(
            lambda s, vals: (
                self.task._apply(vals[other - 1], s.op, vals[s.b - 1]) if s.index == step.index else None
            )
        )
        if values is None:
            return None
        lines = self._lines(values)
        lines[step.index - 3] = _line(misread, values)
        return _text(lines)

    def premature_answer(self) -> str | None:
        step = self._pick_step(last_allowed=False)
        if step is None:
            return None
        lines = self._lines(self.states)[: step.index - 2]
        return _text([*lines, f"{ANSWER_PREFIX}{format_number(self.states[step.index - 1])}"])

    def hallucinated_step(self) -> str | None:
        # reads S_M, the positive's last state: S_N would state the executor's answer (with k >= 1)
        m = self.planned_length
        other = self.rng.randint(max(1, m - self.task.lookback + 1), m)
        op = self.rng.choice(self.task.ops)
        value = self.task._apply(self.states[m - 1], op, self.states[other - 1])
        if value is None:
            return None
        extra = Step(self.program.length + 1, m, op, other)
        return _text([*self._lines(self.states), _line(extra, [*self.states, value])])

    def answer_leaked(self) -> str | None:
        return _text([f"{ANSWER_PREFIX}{format_number(self.states[-1])}"])

    def reordered_steps(self) -> str | None:
        if len(self.steps) < 2:
            return None
        lines = self._lines(self.states)
        first = self.rng.randrange(len(lines) - 1)
        lines[first], lines[first + 1] = lines[first + 1], lines[first]
        return _text(lines)


def procedural_negatives(
    task: ProceduralTask, problem: Problem, rng: random.Random, kinds: Sequence[str] = KINDS
) -> list[tuple[str, str]]:
    """(kind, reasoning) for each applicable kind, distinct from the positive and from each other."""
    perturber = ProceduralPerturber(task, problem, rng)
    positive = task.gold_reasoning(problem)
    seen = {positive}
    negatives = []
    for kind in kinds:
        reasoning = getattr(perturber, kind)()
        if reasoning is None or reasoning in seen:
            continue
        seen.add(reasoning)
        negatives.append((kind, reasoning))
    return negatives
