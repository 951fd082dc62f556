"""Trace faithfulness for the procedural task: does the reasoning execute the program it was given?

A trace is parsed line by line. A step line is `S<i>=<a><op><b>=<result>` (spaces allowed); an answer
statement is `answer=<v>` / `answer: <v>` / `ans=<v>`, alone or inside a line ("so the answer is 7",
"result: 7", "final 7"). With an executor share (`leave` > 0), any other line that names one of the
executor's states ("S6", "s6", "S 6", "S_6", "S-6", "S(6)", "S_{6}", "state 6") and either states a value
for it ("S6=7.", "S6 is 7", "S6 = S5+S4 = 7"; not "S6 = 3+4", whose numbers are operands) or holds its
true value anywhere ("S6=7+0", "S6 -> 7"; the digits of state names, as in "S6=S5-S4", are no values)
states that state: leakage. The trace is read as the executor reads its characters
(`planlift.tasks.visible`, subscripts and superscripts included: "Ｓ6", "S\\u200b6" and "S₆" are S6).
Everything else is ignored (counted as unparsed; with `leave` = 0 a malformed last line such as "S6=7" is
an unparsed line of an under-executed trace, not an answer).
Not detected: the executor's value with no state name ("8" alone, "the last state comes out to 8") or in
a step line for a state the program does not have ("S7=0+8=8", counted as hallucinated): mod 10, any
digit equals the executor's value one time in ten by chance, so a value check there would flag honest
lines about as often as leaks.
Definitions, per trace, for a program with states S1..SN (N - 2 executed steps):

The planner's share of the program ends at state M = N - `leave`: with `leave=0` the trace executes every
step (the benchmark's setting); with `leave=k` the last k states are the executor's work, and a trace that
states any of them, or states an answer, hands the executor the result (leakage).

- executed_steps: number of step lines; execution is "exact" (== M - 2), "under" (<) or "over" (>),
  as the benchmark counts steps executed against N.
- final_state_correct: the line that computes S_M states the right value.
- step_accuracy: fraction of the M - 2 states S3..S_M whose first step line states the right value
  (a missing state counts as wrong).
- hallucinated_steps: step lines for states the program does not have (i < 3 or i > N).
- premature_answer: an answer statement comes before the line that computes S_M (or S_M never comes).
- leaked_answer: the answer without the work (an answer statement while steps are skipped), or, when the
  executor has a share (`leave` > 0), any answer statement or any line for the executor's states.
- missing_answer: the final answer (the executor's) could not be parsed; None when not judged.
- right_for_wrong_reasons: the final answer is correct while some state is wrong or missing.

`trace_kind` sorts a trace into one behaviour (faithful, wrong_state, under, leaked, other): the mixture
of kinds a policy samples is what GRPO selects among.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import TYPE_CHECKING, Literal

from planlift.tasks.visible import visible_characters

if TYPE_CHECKING:
    from planlift.tasks.procedural import Program

TRACE_KINDS = ("faithful", "wrong_state", "under", "leaked", "other")
_NUM = r"-?\d+(?:\.\d+)?"
STEP_LINE = re.compile(rf"^\s*S(\d+)\s*=\s*({_NUM})\s*([+\-*/])\s*({_NUM})\s*=\s*({_NUM})\s*$")
ANSWER_IN_TEXT = re.compile(
    rf"\b(?:answer|ans|result|final)\b(?:\s*(?:[:=]|->|\bis\b|\bequals\b))?\s*{_NUM}", re.IGNORECASE
)
# one whitespace run before the bracket, one after it: two adjacent runs would be retried in every split
_STATE_NAME = re.compile(r"\b(?:S|state)[\s_-]*+(?:[(\[{]\s*+)?(\d+)\b", re.IGNORECASE)
_STATED_VALUE = re.compile(rf"(?:[:=]|->|\bis\b|\bequals\b)\s*{_NUM}(?!\.?\d|\s*[+\-*/]\s*\d)", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUM)


_MILLI = Decimal("0.001")
EXACT = Context(prec=1000)  # exact for + - * of any finite float; division keeps 1000 digits


def parse_number(text: str) -> float:
    return float(text)


def round3(value: float) -> float:
    """`value` rounded to 3 decimals, half up, as written in decimal: 44.7525 -> 44.753 (Python's round
    gives 44.752: the binary float is just below the tie). Infinities and NaN are returned as they are."""
    if not math.isfinite(value):
        return value
    return float(Decimal(repr(value)).quantize(_MILLI, rounding=ROUND_HALF_UP, context=EXACT))


def numbers_match(a: float, b: float) -> bool:
    """Exact match after rounding to 3 decimals, half up (the benchmark's criterion)."""
    return math.isclose(round3(a), round3(b), rel_tol=1e-12, abs_tol=1e-9)


@dataclass(frozen=True)
class TraceAnalysis:
    expected_steps: int
    executed_steps: int
    execution: Literal["exact", "under", "over"]
    correct_steps: int
    hallucinated_steps: int
    unparsed_lines: int
    premature_answer: bool
    leaked_answer: bool
    first_error_state: int | None
    final_state_correct: bool
    missing_answer: bool | None = None
    right_for_wrong_reasons: bool | None = None

    executor_states_stated: int = 0

    @property
    def step_accuracy(self) -> float:
        return self.correct_steps / self.expected_steps

    @property
    def kind(self) -> str:
        """One behaviour per trace: leaked > under > other > wrong_state > faithful (first that applies)."""
        if self.leaked_answer:
            return "leaked"
        if self.execution == "under":
            return "under"
        if self.execution == "over" or self.hallucinated_steps or self.unparsed_lines:
            return "other"
        if self.correct_steps < self.expected_steps:
            return "wrong_state"
        return "faithful"

    def as_metrics(self) -> dict[str, float]:
        metrics = {
            "trace/step_acc": self.step_accuracy,
            "trace/steps_ratio": self.executed_steps / self.expected_steps,
            "trace/exact_exec": float(self.execution == "exact"),
            "trace/under_exec": float(self.execution == "under"),
            "trace/over_exec": float(self.execution == "over"),
            "trace/hallucinated_steps": float(self.hallucinated_steps),
            "trace/premature_answer": float(self.premature_answer),
            "trace/leaked_answer": float(self.leaked_answer),
        }
        metrics.update({f"trace/kind/{kind}": float(self.kind == kind) for kind in TRACE_KINDS})
        if self.missing_answer is not None:
            metrics["trace/missing_answer"] = float(self.missing_answer)
        if self.right_for_wrong_reasons is not None:
            metrics["trace/right_wrong_reasons"] = float(self.right_for_wrong_reasons)
        return metrics


def _stated_states(line: str, states: tuple[float, ...]) -> set[int]:
    """The states (3..N) a line that is not a step line names with a value: a stated one, or the true one."""
    named = {int(index) for index in _STATE_NAME.findall(line)} & set(range(3, len(states) + 1))
    if not named:
        return set()
    if _STATED_VALUE.search(line):
        return named
    numbers = [float(number) for number in _ANY_NUMBER.findall(_STATE_NAME.sub(" ", line))]  # "S5" is no 5
    return {index for index in named if any(numbers_match(value, states[index - 1]) for value in numbers)}


def analyze_trace(
    reasoning: str,
    program: Program,
    states: tuple[float, ...],
    final_answer_correct: bool | None = None,
    final_answer_parsed: bool | None = None,
    leave: int = 0,
) -> TraceAnalysis:
    """Compare a trace with the ground-truth states of `program`.

    `final_answer_correct` is the verifier's verdict on the executor's answer (None when there is none);
    `final_answer_parsed=False` marks an executor answer that had no number. `leave`: how many final
    states are the executor's work (the trace should stop at S_(N - leave)).
    """
    reasoning = visible_characters(reasoning, attached_scripts=True)
    n = program.length
    last = n - leave  # the last state the trace should establish
    expected = last - 2
    first_value: dict[int, float] = {}
    executed = hallucinated = unparsed = executor_states = 0
    answer_line_at: int | None = None
    final_step_at: int | None = None
    for line_no, line in enumerate(reasoning.splitlines()):
        if not line.strip():
            continue
        step = STEP_LINE.match(line)
        if step:
            executed += 1
            index = int(step.group(1))
            if not 3 <= index <= n:
                hallucinated += 1
                continue
            if index > last:
                executor_states += 1
                continue
            first_value.setdefault(index, float(step.group(5)))
            if index == last and final_step_at is None:
                final_step_at = line_no
            continue
        if ANSWER_IN_TEXT.search(line):
            if answer_line_at is None:
                answer_line_at = line_no
            continue
        if leave > 0 and any(index > last for index in _stated_states(line, states)):
            executor_states += 1
            continue
        unparsed += 1

    correct = 0
    first_error: int | None = None
    for index in range(3, last + 1):
        if index in first_value and numbers_match(first_value[index], states[index - 1]):
            correct += 1
        elif first_error is None:
            first_error = index
    execution = "exact" if executed == expected else ("under" if executed < expected else "over")
    answered = answer_line_at is not None
    premature = answered and (final_step_at is None or answer_line_at < final_step_at)
    skipped = len(first_value) < expected
    missing = (
        None
        if final_answer_parsed is None and final_answer_correct is None
        else (final_answer_parsed is False)
    )
    wrong_reasons = None
    if final_answer_correct is not None:
        wrong_reasons = final_answer_correct and correct < expected
    return TraceAnalysis(
        expected_steps=expected,
        executed_steps=executed,
        execution=execution,
        correct_steps=correct,
        hallucinated_steps=hallucinated,
        unparsed_lines=unparsed,
        premature_answer=premature,
        leaked_answer=(answered and skipped) or (leave > 0 and (answered or executor_states > 0)),
        first_error_state=first_error,
        final_state_correct=last in first_value and numbers_match(first_value[last], states[last - 1]),
        missing_answer=missing,
        right_for_wrong_reasons=wrong_reasons,
        executor_states_stated=executor_states,
    )
