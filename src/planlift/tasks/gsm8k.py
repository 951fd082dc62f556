"""GSM8K (grade-school math word problems): the planner writes the reasoning, the executor the number.

Splits: `train` and `validation` are carved from GSM8K's train file (validation = the
`validation_size` problems whose id hashes lowest, so the carve is deterministic and independent of
file order); `test` is GSM8K's test file. Gold reasoning is the worked GSM8K solution (calculator
annotations removed); it ends with the answer, so it leaks by construction: the gold arm of an evaluation
is the executor's ceiling, not a plan.

Executor replies are prefilled with `answer_prefix` ("The answer is ": SmolLM2-135M answers in a
parseable form only with it) and stop at a newline; `planlift.tasks.answers` decides
equivalence with math-verify.

Leakage (`leakage`):
- "value": the reference answer's value appears in the reasoning (numbers the problem itself states do
  not count; when the answer is one of them, only an explicit statement counts).
- "statement": the reasoning announces a final answer ("the answer is", "####", "\\boxed{}").
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any

from planlift.datasets.files import files_digest
from planlift.datasets.gsm8k import gsm8k_file, load_gsm8k
from planlift.errors import ConfigError
from planlift.tasks import answers
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
    first_of_split,
)

LEAKAGE_MODES = ("value", "statement")
DEFAULT_PLANNER_INSTRUCTION = (
    "Write the reasoning that solves the math problem below: the quantities that matter and the "
    "calculations to do, one short step per line. Do not state the final answer. "
    f"Close with {REASONING_CLOSE}."
)
DEFAULT_EXECUTOR_INSTRUCTION = "Use the reasoning to answer the problem. Reply with the final number only."
DEFAULT_EXECUTOR_ALONE_INSTRUCTION = "Answer the problem. Reply with the final number only."


class GSM8KTask(Task):
    """GSM8K with a deterministic validation carve, math-verify equivalence and a leakage detector.

    Args:
        validation_size: problems moved from GSM8K train to `validation`.
        data_dir: folder with train.jsonl / test.jsonl (None = the vendored `data/gsm8k`).
        answer_prefix: prefill of the executor's reply ("" lets the executor write its own working: no
            stop string then, and math-verify takes the last expression).
        leakage: "value" | "statement" (module docstring).
        system_prompt / planner_instruction / executor_instruction / executor_alone_instruction: prompt text.
        sizes: at most this many problems per split, the first in file order after the validation carve
            (e.g. {train: 200}; absent = all).
    """

    name = "gsm8k"
    task_type = "math"

    def __init__(
        self,
        validation_size: int = 200,
        data_dir: str | None = None,
        answer_prefix: str = "The answer is ",
        leakage: str = "value",
        system_prompt: str | None = None,
        planner_instruction: str = DEFAULT_PLANNER_INSTRUCTION,
        executor_instruction: str = DEFAULT_EXECUTOR_INSTRUCTION,
        executor_alone_instruction: str = DEFAULT_EXECUTOR_ALONE_INSTRUCTION,
        sizes: dict[str, int] | None = None,
    ) -> None:
        if validation_size < 0:
            raise ConfigError(f"task.validation_size must be >= 0, got {validation_size}")
        if leakage not in LEAKAGE_MODES:
            raise ConfigError(f"task.leakage must be one of {list(LEAKAGE_MODES)}, got {leakage!r}")
        self.sizes = check_sizes(sizes)
        self.validation_size = validation_size
        self.data_dir = data_dir
        self.answer_prefix = answer_prefix
        self.leakage = leakage
        self.system_prompt = system_prompt
        self.planner_instruction = planner_instruction
        self.executor_instruction = executor_instruction
        self.executor_alone_instruction = executor_alone_instruction

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data": self._data_digest,  # ids are line numbers: other files would reuse cached verdicts
            "validation_size": self.validation_size,
            "answer_prefix": self.answer_prefix,
            "leakage": self.leakage,
            "system_prompt": self.system_prompt,
            "planner_instruction": self.planner_instruction,
            "executor_instruction": self.executor_instruction,
            "executor_alone_instruction": self.executor_alone_instruction,
        }

    # ---- data -------------------------------------------------------------------------------------

    @cached_property
    def _data_digest(self) -> str:
        return files_digest([gsm8k_file(split, self.data_dir) for split in ("train", "test")])

    def _load(self, split: str) -> list[Problem]:
        return [
            Problem(id=r.id, text=r.question, answer=r.answer, meta={"solution": r.solution})
            for r in load_gsm8k(split, gsm8k_file(split, self.data_dir))
        ]

    @cached_property
    def _splits(self) -> dict[str, list[Problem]]:
        train = self._load("train")
        if self.validation_size > len(train):
            raise ConfigError(
                f"task.validation_size={self.validation_size} exceeds the {len(train)} GSM8K train problems"
            )
        ranked = sorted(train, key=lambda p: hashlib.sha256(p.id.encode()).hexdigest())
        held = {p.id for p in ranked[: self.validation_size]}
        splits = {
            "train": [p for p in train if p.id not in held],
            "validation": [p for p in train if p.id in held],
            "test": self._load("test"),
        }
        return {split: first_of_split(items, split, self.sizes, self.name) for split, items in splits.items()}

    def problems(self, split: Split) -> list[Problem]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; known: {list(SPLITS)}")
        return self._splits[split]

    def gold_reasoning(self, problem: Problem) -> str:
        return problem.meta["solution"].rstrip() + "\n"

    # ---- prompts ----------------------------------------------------------------------------------

    def planner_prompt(self, problem: Problem) -> ChatPrompt:
        return ChatPrompt(
            user=f"{self.planner_instruction}\n\nProblem: {problem.text}",
            system=self.system_prompt,
            prefill=f"{REASONING_OPEN}\n",
            stop=(REASONING_CLOSE,),
        )

    def executor_prompt(self, problem: Problem, reasoning: str | None) -> ChatPrompt:
        if reasoning is None:
            user = f"Problem: {problem.text}\n\n{self.executor_alone_instruction}"
        else:
            user = (
                f"Problem: {problem.text}\n\nReasoning:\n{reasoning.strip()}\n\n{self.executor_instruction}"
            )
        stop = ("\n",) if self.answer_prefix else ()
        return ChatPrompt(user=user, system=self.system_prompt, prefill=self.answer_prefix, stop=stop)

    # ---- judging ----------------------------------------------------------------------------------

    def extract_reasoning(self, completion: str) -> str:
        reasoning = completion.split(REASONING_CLOSE, 1)[0]
        if reasoning and not reasoning.endswith("\n"):
            reasoning += "\n"
        return reasoning

    def verify(self, problem: Problem, executor_output: str) -> Verdict:
        correct, parsed = answers.answers_match(problem.answer, executor_output)
        if parsed is None:
            return Verdict(correct=False, pass_rate=0.0, status="no_answer", parsed=None)
        return Verdict(
            correct=correct, pass_rate=float(correct), status="correct" if correct else "wrong", parsed=parsed
        )

    def detect_leakage(self, problem: Problem, reasoning: str) -> bool:
        if self.leakage == "statement":
            return answers.states_final_answer(reasoning)
        return answers.states_answer_value(reasoning, problem.answer, problem.text)
