"""What every task provides: problems, the planner and executor prompts, and the verifier.

A task is the single source of truth for "is this right": the reward and every evaluation call
`Task.verify`, so the training signal and the reported metric cannot drift apart.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from planlift.errors import ConfigError

Split = Literal["train", "validation", "test"]
# The planner writes its reasoning between these tags (the method's format: reasoning only, inside tags).
REASONING_OPEN = "<reasoning>"
REASONING_CLOSE = "</reasoning>"
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
TaskType = Literal["math", "code"]  # the RM input's <type> tag
TASK_TYPES: tuple[TaskType, ...] = ("math", "code")


def check_sizes(sizes: Mapping[str, int] | None, minimums: Mapping[str, int] | None = None) -> dict[str, int]:
    """Validated `task.sizes`: problems per split, each an integer >= its minimum (1 unless `minimums`
    says otherwise). Dataset tasks read it as a cap (absent = all)."""
    checked = dict(sizes or {})
    for split, size in checked.items():
        if split not in SPLITS:
            raise ConfigError(f"task.sizes has unknown split {split!r}; known: {list(SPLITS)}")
        minimum = (minimums or {}).get(split, 1)
        if not isinstance(size, int) or isinstance(size, bool) or size < minimum:
            raise ConfigError(f"task.sizes.{split} must be >= {minimum}, got {size!r} (an integer)")
    return checked


def first_of_split(items: list, split: str, sizes: Mapping[str, int], task: str) -> list:
    """The first `sizes[split]` items of a dataset split, in file order; an error when it has fewer."""
    size = sizes.get(split)
    if size is None:
        return items
    if size > len(items):
        raise ConfigError(f"task.sizes.{split}={size} exceeds the {len(items)} problems of {task}/{split}")
    return items[:size]


@dataclass(frozen=True)
class Problem:
    """One problem. `meta` holds task-specific ground truth (intermediate states, tests ...)."""

    id: str
    text: str
    answer: str
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ChatPrompt:
    """A prompt before rendering: chat models get a chat template, plain LMs get `user + prefill`.

    `prefill` starts the reply (e.g. "<reasoning>\\n" for the planner, "answer=" for the executor);
    generated text excludes it. `stop` ends generation (the stop string is cut from the text).
    """

    user: str
    system: str | None = None
    prefill: str = ""
    stop: tuple[str, ...] = ()


# A program the sandbox could not start (planlift.sandbox): no verdict on it; the reward masks it.
SANDBOX_ERROR = "sandbox_error"


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement of one executor output.

    status: "correct", "wrong", "no_answer" for answer tasks; code tasks add "failed_tests",
    "runtime_error", "timeout", "syntax_error", "no_tests" and "sandbox_error" (the program never ran).
    """

    correct: bool
    pass_rate: float
    status: str
    parsed: str | None = None


class Task(abc.ABC):
    """A family of problems with a reasoning format, an executor format and a verifier."""

    name: str
    task_type: TaskType
    # each problem's meta holds its program and true states (the oracle RM and trace metrics read them)
    has_ground_truth_states: bool = False
    # Behaviours `reasoning` can write (for a warm-start mixture); empty when the task has none.
    reasoning_kinds: tuple[str, ...] = ()

    @abc.abstractmethod
    def problems(self, split: Split) -> Sequence[Problem]:
        """The problems of one split (deterministic)."""

    @abc.abstractmethod
    def planner_prompt(self, problem: Problem) -> ChatPrompt:
        """What the planner sees; its reply is the reasoning (and the closing tag)."""

    @abc.abstractmethod
    def executor_prompt(self, problem: Problem, reasoning: str | None) -> ChatPrompt:
        """What the frozen executor sees; `reasoning=None` is the no-reasoning baseline."""

    @abc.abstractmethod
    def extract_reasoning(self, completion: str) -> str:
        """The reasoning inside the planner's completion (text before the closing tag)."""

    @abc.abstractmethod
    def verify(self, problem: Problem, executor_output: str) -> Verdict:
        """Judge one executor output against the reference."""

    def verify_batch(
        self, problems: Sequence[Problem], outputs: Sequence[str], early_exit: bool | Sequence[bool] = False
    ) -> list[Verdict]:
        """`verify` for many outputs at once (code tasks run them in parallel). `early_exit`: only
        `correct` is needed (a code task may stop at the first failing test; pass_rate is then a lower bound)."""
        return [self.verify(p, o) for p, o in zip(problems, outputs, strict=True)]

    def detect_leakage(self, problem: Problem, reasoning: str) -> bool:
        """True when the reasoning hands the executor the final answer instead of a plan."""
        return False

    def trace_metrics(
        self, problem: Problem, reasoning: str, executor_output: str | None
    ) -> dict[str, float]:
        """Per-trace faithfulness metrics (empty when the task has no ground-truth trace)."""
        return {}

    def gold_reasoning(self, problem: Problem) -> str | None:
        """A reference reasoning for the problem, when the data has one."""
        return None

    def reasoning(self, problem: Problem, kind: str, rng: random.Random) -> str:
        """A reasoning of one of `reasoning_kinds` (faithful, flawed in a known way ...), seeded by `rng`."""
        raise ConfigError(f"task {self.name!r} writes no reasoning kinds")

    def planner_target(self, problem: Problem) -> str | None:
        """The supervised planner completion (gold reasoning and closing tag), when there is gold reasoning."""
        gold = self.gold_reasoning(problem)
        return None if gold is None else f"{gold}{REASONING_CLOSE}"

    def executor_target(self, problem: Problem) -> str:
        """The supervised executor completion after the prompt's prefill."""
        return problem.answer

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the generated data; used for cache keys."""
        return {"name": self.name}
