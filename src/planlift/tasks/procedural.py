"""The procedural-execution task (arXiv 2605.00817): follow a program of arithmetic steps.

A problem has inputs x, y (`S1 = x`, `S2 = y`) and steps `S_i = S_a op S_b` for i = 3..N: one operand is
S_(i-1), the other at most `lookback` states back (and not S_(i-1) when the look-back allows);
every state is rounded to 3 decimals; the answer is `S_N` rounded to 3 decimals. Every intermediate state is
known, so the faithfulness of a trace (not only its answer) can be measured (`procedural_trace`).
A step is computed in decimal from its operands as the trace shows them and rounded half up, as by hand
(6.885*6.5 = 44.7525 -> 44.753). States are stored as floats, which hold 3 decimals only below ~1e12;
long programs with * reach far beyond (2.9e82 in 2,000 problems of the benchmark's configuration), and
there the float comparisons' relative tolerance of 1e-12 decides, not the third decimal.

Two value modes:
- `modulus: null` — the benchmark as specified: int or float inputs, ops from + - * /.
- `modulus: m` — every value is taken mod m (ops + - *): small integers that tiny models can learn.

Rendering (compact, so character-level models can read it)::

    problem:    S1=3 S2=7 S3=S1+S2 S4=S3*S1 S5=S4-S2 S6=S5+S3 S6?
    reasoning:  S3=3+7=0            one line per executed step: S_i=<value a><op><value b>=<result>
    executor:   <problem>\\n<reasoning>\\n...</reasoning>\\nanswer=<S6>

The executor's share (`executor_steps: k`): with k = 0 the planner executes every step and the executor
reads the answer off the trace. With k >= 1 the planner's reasoning stops at S_(N-k) and the executor
finishes the computation in the same line format, e.g. for k = 1 it is prompted with the prefill `S6=` and
writes `0+0=0`; its answer is the value of its S_N line. A reasoning that states any of the executor's
states, or an answer, is leakage. Then the executor needs the reasoning (alone it must guess the states it
reads) and still does work with it (the last steps), so uplift measures how much the reasoning helps.

Reasoning kinds (`reasoning`): besides the gold trace, seeded traces of the behaviours a planner can show:
`early_stop` (stops before S_(N-k)), `wrong_state` (one state the executor never reads is wrong; the rest,
and so the answer, stay right), `leaked` (the answer stated outright, without the work). The bootstrap warm-starts
the tiny planner on a mixture of them, so that GRPO has behaviours to select among.

Splits are disjoint by construction: a problem belongs to the split its content hash falls into.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from planlift.errors import ConfigError
from planlift.tasks.base import (
    REASONING_CLOSE,
    REASONING_OPEN,
    SPLITS,
    ChatPrompt,
    Problem,
    Split,
    Task,
    Verdict,
    check_sizes,
)
from planlift.tasks.procedural_trace import (
    EXACT,
    STEP_LINE,
    TraceAnalysis,
    analyze_trace,
    numbers_match,
    parse_number,
    round3,
)

OPS = ("+", "-", "*", "/")
ANSWER_PREFIX = "answer="
REASONING_KINDS = ("faithful", "early_stop", "wrong_state", "leaked")
# Fraction of the hash space owned by each split (train, validation, test).
SPLIT_BOUNDS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
_MAX_TRIES_PER_PROBLEM = 1000


@dataclass(frozen=True)
class Step:
    """`S_index = S_a op S_b`."""

    index: int
    a: int
    op: str
    b: int


@dataclass(frozen=True)
class Program:
    x: float
    y: float
    steps: tuple[Step, ...]

    @property
    def length(self) -> int:
        return len(self.steps) + 2


class ProceduralTask(Task):
    """Seeded generator, prompts, verifier and trace metrics for the procedural task.

    Args:
        length: N, the number of states (S1..SN); N - 2 steps are executed.
        lookback: how many states back an operand may reach (1..7 in the benchmark).
        value_range: [low, high] for the inputs x and y.
        number_type: "int" or "float" inputs (floats have 2 decimals).
        ops: the operation mix, e.g. "+-*/" or "+" (a single op).
        modulus: None for the benchmark's real arithmetic, or m for values mod m (ops + - * only).
        executor_steps: k, the last k states that the executor computes from the planner's reasoning
            (0: the planner executes everything and the executor reads the answer off the trace).
        sizes: number of problems per split.
        seed: generator seed.
        planner_instruction / executor_instruction: optional natural-language headers for LLMs;
            empty for the tiny character-level models.
    """

    name = "procedural"
    task_type = "math"
    has_ground_truth_states = True
    reasoning_kinds = REASONING_KINDS

    def __init__(
        self,
        length: int = 6,
        lookback: int = 2,
        value_range: Sequence[float] = (0, 9),
        number_type: str = "int",
        ops: str = "+-",
        modulus: int | None = 10,
        executor_steps: int = 0,
        sizes: dict[str, int] | None = None,
        seed: int = 0,
        planner_instruction: str = "",
        executor_instruction: str = "",
    ) -> None:
        if length < 3:
            raise ConfigError(f"task.length must be >= 3 (S1, S2 and at least one step), got {length}")
        if lookback < 1:
            raise ConfigError(f"task.lookback must be >= 1, got {lookback}")
        if number_type not in ("int", "float"):
            raise ConfigError(f"task.number_type must be 'int' or 'float', got {number_type!r}")
        if not ops or any(op not in OPS for op in ops):
            raise ConfigError(f"task.ops must be a non-empty string over {''.join(OPS)!r}, got {ops!r}")
        if modulus is not None:
            if modulus < 2:
                raise ConfigError(f"task.modulus must be >= 2 or null, got {modulus}")
            if "/" in ops:
                raise ConfigError("task.ops may not contain '/' when task.modulus is set")
            if number_type != "int":
                raise ConfigError("task.number_type must be 'int' when task.modulus is set")
        if not 0 <= executor_steps <= length - 3:
            raise ConfigError(
                f"task.executor_steps must be in [0, task.length - 3] = [0, {length - 3}] (the planner keeps "
                f"at least one step), got {executor_steps}"
            )
        low, high = value_range
        if low > high:
            raise ConfigError(f"task.value_range must be [low, high], got {list(value_range)}")
        # training and its validation need problems; the test split may be empty
        sizes = check_sizes(sizes or {"train": 4000, "validation": 200, "test": 200}, minimums={"test": 0})
        self.length = length
        self.lookback = lookback
        self.value_range = (low, high)
        self.number_type = number_type
        self.ops = ops
        self.modulus = modulus
        self.executor_steps = executor_steps
        self.sizes = sizes
        self.seed = seed
        self.planner_instruction = planner_instruction
        self.executor_instruction = executor_instruction
        self._splits: dict[str, list[Problem]] = {}

    # ---- generation -------------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        rounding = {} if self.modulus is not None else {"rounding": "decimal_half_up"}  # was binary round()
        return rounding | {
            "name": self.name,
            "length": self.length,
            "lookback": self.lookback,
            "value_range": list(self.value_range),
            "number_type": self.number_type,
            "ops": self.ops,
            "modulus": self.modulus,
            "executor_steps": self.executor_steps,
            "sizes": dict(sorted(self.sizes.items())),
            "seed": self.seed,
            "planner_instruction": self.planner_instruction,
            "executor_instruction": self.executor_instruction,
        }

    def problems(self, split: Split) -> list[Problem]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; known: {list(SPLITS)}")
        if split not in self._splits:
            self._splits[split] = self._generate_split(split, self.sizes.get(split, 0))
        return self._splits[split]

    def _generate_split(self, split: str, size: int) -> list[Problem]:
        rng = random.Random(f"{self.seed}/{split}")
        low, high = SPLIT_BOUNDS[split]
        seen: set[str] = set()
        problems: list[Problem] = []
        tries = 0
        while len(problems) < size:
            tries += 1
            if tries > _MAX_TRIES_PER_PROBLEM * max(size, 1):
                raise ConfigError(
                    f"task: could only generate {len(problems)} of {size} distinct {split} problems; "
                    "the problem space is too small for task.sizes (raise length or modulus)"
                )
            program = self._sample_program(rng)
            if program is None:
                continue
            key = self.render_problem(program)
            bucket = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12
            if not (low <= bucket < high) or key in seen:
                continue
            seen.add(key)
            problems.append(self._make_problem(program, key))
        return problems

    def _sample_input(self, rng: random.Random) -> float:
        low, high = self.value_range
        if self.number_type == "int":
            return float(rng.randint(int(low), int(high)))
        return round(rng.uniform(low, high), 2)

    def _sample_program(self, rng: random.Random) -> Program | None:
        """One program, or None when a division by zero would occur (the caller draws again)."""
        x, y = self._sample_input(rng), self._sample_input(rng)
        values = [x, y]
        steps = []
        for i in range(3, self.length + 1):
            # One operand is always the previous state, so every step feeds the answer; the other
            # reaches further back when the look-back allows it (S_i = S_(i-1) - S_(i-1) is degenerate).
            first = max(1, i - self.lookback)
            other = rng.randint(first, i - 2) if first <= i - 2 else i - 1
            a, b = (i - 1, other) if rng.random() < 0.5 else (other, i - 1)
            op = rng.choice(self.ops)
            value = self._apply(values[a - 1], op, values[b - 1])
            if value is None:
                return None
            values.append(value)
            steps.append(Step(i, a, op, b))
        return Program(x, y, tuple(steps))

    def _apply(self, a: float, op: str, b: float) -> float | None:
        """One step in decimal arithmetic on the operands as a trace shows them, rounded half up to the 3
        decimals a trace shows (so following the trace is exact); None for a division by zero or a state
        beyond float range."""
        x, y = Decimal(repr(a)), Decimal(repr(b))
        if op == "/" and y == 0:
            return None
        value = {"+": EXACT.add, "-": EXACT.subtract, "*": EXACT.multiply, "/": EXACT.divide}[op](x, y)
        if self.modulus is not None:
            return float(int(value) % self.modulus)
        value = float(value)
        return round3(value) if math.isfinite(value) else None

    def execute(self, program: Program) -> list[float]:
        """All states S1..SN."""
        values = [program.x, program.y]
        for step in program.steps:
            value = self._apply(values[step.a - 1], step.op, values[step.b - 1])
            assert value is not None, "programs are generated without division by zero"
            values.append(value)
        return values

    def _make_problem(self, program: Program, text: str) -> Problem:
        states = self.execute(program)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return Problem(
            id=f"proc-{digest}",
            text=text,
            answer=format_number(states[-1]),
            meta={"program": program, "states": tuple(states)},
        )

    # ---- rendering --------------------------------------------------------------------------------

    def render_problem(self, program: Program) -> str:
        parts = [f"S1={format_number(program.x)}", f"S2={format_number(program.y)}"]
        parts += [f"S{s.index}=S{s.a}{s.op}S{s.b}" for s in program.steps]
        parts.append(f"S{program.length}?")
        return " ".join(parts)

    @property
    def planned_length(self) -> int:
        """M: the last state the planner's reasoning establishes (S_M; the executor computes the rest)."""
        return self.length - self.executor_steps

    @staticmethod
    def step_line(step: Step, states: Sequence[float], result: float | None = None) -> str:
        """`S_i=<a><op><b>=<result>` with the operands' values from `states` (result: the true S_i)."""
        value = states[step.index - 1] if result is None else result
        a, b = format_number(states[step.a - 1]), format_number(states[step.b - 1])
        return f"S{step.index}={a}{step.op}{b}={format_number(value)}"

    def gold_reasoning(self, problem: Problem) -> str:
        program: Program = problem.meta["program"]
        states = problem.meta["states"]
        lines = [self.step_line(s, states) for s in program.steps if s.index <= self.planned_length]
        return "\n".join(lines) + "\n"

    def reasoning(self, problem: Problem, kind: str, rng: random.Random) -> str:
        """A reasoning of one behaviour (REASONING_KINDS), seeded by `rng`:

        faithful: the gold trace (S3..S_M). early_stop: its first j lines, stopping within the last third of
            its work (j from L - max(1, L // 3) to L - 1 of L = M - 2 lines): under-execution that keeps the
            steps it does write (so a warm-start on it still learns the line arithmetic).
        wrong_state: the gold trace with one state's value wrong, a state that no later step reads or that is
            only read by the planner's own later lines (which keep the true values): right for the wrong reasons.
        leaked: `answer=<S_N>` and nothing else: the answer stated outright, without the work (a premature
            answer; for a model that cannot compute S_N in one token it is mostly a guess).
        """
        program: Program = problem.meta["program"]
        states = problem.meta["states"]
        planned = [s for s in program.steps if s.index <= self.planned_length]
        lines = [self.step_line(s, states) for s in planned]
        if kind == "faithful":
            pass
        elif kind == "early_stop":
            if len(lines) < 2:
                raise ConfigError("reasoning kind 'early_stop' needs at least 2 planned steps (task.length)")
            lines = lines[: rng.randint(len(lines) - max(1, len(lines) // 3), len(lines) - 1)]
        elif kind == "wrong_state":
            read_by_executor = {o for s in program.steps if s.index > self.planned_length for o in (s.a, s.b)}
            if self.executor_steps == 0:
                read_by_executor.add(self.length)
            candidates = [i for i, s in enumerate(planned) if s.index not in read_by_executor]
            if not candidates:
                raise ConfigError(
                    "reasoning kind 'wrong_state' needs a planned state the executor does not read "
                    "(raise task.length or task.executor_steps)"
                )
            j = rng.choice(candidates)
            lines[j] = self.step_line(
                planned[j], states, self._wrong_value(states[planned[j].index - 1], rng)
            )
        elif kind == "leaked":
            lines = [f"{ANSWER_PREFIX}{format_number(states[-1])}"]
        else:
            raise ConfigError(f"unknown reasoning kind {kind!r}; known: {list(REASONING_KINDS)}")
        return "\n".join(lines) + "\n"

    def _wrong_value(self, value: float, rng: random.Random) -> float:
        if self.modulus is not None:
            return float((int(value) + rng.randint(1, self.modulus - 1)) % self.modulus)
        return round3(value + rng.choice((-1, 1)) * rng.randint(1, 9))

    def planner_prompt(self, problem: Problem) -> ChatPrompt:
        return ChatPrompt(
            user=f"{self.planner_instruction}{problem.text}\n",
            prefill=f"{REASONING_OPEN}\n",
            stop=(REASONING_CLOSE,),
        )

    def executor_prompt(self, problem: Problem, reasoning: str | None) -> ChatPrompt:
        user = f"{self.executor_instruction}{problem.text}\n"
        if reasoning is not None:
            user += f"{REASONING_OPEN}\n{reasoning}{REASONING_CLOSE}\n"
        if self.executor_steps == 0:
            return ChatPrompt(user=user, prefill=ANSWER_PREFIX, stop=("\n",))
        # The executor writes its steps S_(M+1)..S_N; the prefill opens the first line.
        return ChatPrompt(user=user, prefill=self._executor_prefill, stop=("\n\n",))

    @property
    def _executor_prefill(self) -> str:
        return f"S{self.planned_length + 1}="

    def executor_target(self, problem: Problem) -> str:
        if self.executor_steps == 0:
            return problem.answer
        program: Program = problem.meta["program"]
        states = problem.meta["states"]
        lines = [self.step_line(s, states) for s in program.steps if s.index > self.planned_length]
        return "\n".join(lines)[len(self._executor_prefill) :]

    # ---- judging ----------------------------------------------------------------------------------

    def extract_reasoning(self, completion: str) -> str:
        reasoning = completion.split(REASONING_CLOSE, 1)[0]
        if reasoning and not reasoning.endswith("\n"):
            reasoning += "\n"
        return reasoning

    def verify(self, problem: Problem, executor_output: str) -> Verdict:
        """k = 0: the first number of the output. k >= 1: the value of the executor's S_N line."""
        parsed = self._executor_answer(executor_output)
        if parsed is None:
            return Verdict(correct=False, pass_rate=0.0, status="no_answer", parsed=None)
        correct = numbers_match(parse_number(parsed), float(problem.answer))
        return Verdict(
            correct=correct, pass_rate=float(correct), status="correct" if correct else "wrong", parsed=parsed
        )

    def _executor_answer(self, executor_output: str) -> str | None:
        if self.executor_steps == 0:
            match = _FIRST_NUMBER.search(executor_output)
            return None if match is None else match.group(0)
        for line in (self._executor_prefill + executor_output).splitlines():
            step = STEP_LINE.match(line)
            if step and int(step.group(1)) == self.length:
                return step.group(5)
        return None

    def detect_leakage(self, problem: Problem, reasoning: str) -> bool:
        return self.analyze(problem, reasoning).leaked_answer

    def analyze(self, problem: Problem, reasoning: str, **verdict) -> TraceAnalysis:
        return analyze_trace(
            reasoning, problem.meta["program"], problem.meta["states"], leave=self.executor_steps, **verdict
        )

    def trace_metrics(
        self, problem: Problem, reasoning: str, executor_output: str | None
    ) -> dict[str, float]:
        correct = parsed = None
        if executor_output is not None:
            verdict = self.verify(problem, executor_output)
            correct, parsed = verdict.correct, verdict.parsed is not None
        analysis = self.analyze(problem, reasoning, final_answer_correct=correct, final_answer_parsed=parsed)
        return analysis.as_metrics()


_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def format_number(value: float) -> str:
    """Integers without a decimal point; others rounded to 3 decimals with trailing zeros cut."""
    rounded = round3(value)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:.3f}".rstrip("0").rstrip(".")
