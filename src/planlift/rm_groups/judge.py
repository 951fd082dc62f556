"""An optional judge labeler: any executor backend scores each candidate with a rubric prompt.

The judge must reply with one JSON object and nothing else (after the `{` the prompt prefills)::

    {"problem_understanding": 0-10, "solution_strategy": 0-10, ..., "total": 0-10}

Parsing is strict: a reply that is not exactly that object (missing or extra keys, non-numbers, values
outside 0..10, text around it) is invalid. Invalid replies are retried (sampled) up to `retries` times;
a candidate that never gets a valid reply is reported in `failures` and left unlabeled — never guessed.
Labels use the authors' mapping: label = min(4, floor(score / 2)), total = score / 10.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from planlift.errors import ConfigError
from planlift.executors.base import Executor
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rubric_rm.rubric import LabelRequest, judge_scores_to_rubric
from planlift.tasks.base import ChatPrompt

log = logging.getLogger(__name__)

SYSTEM = "You are a strict grader of step-by-step reasoning. You reply with JSON only."
TEMPLATE = """Grade the reasoning below for the problem. Score each criterion from 0 (absent or wrong) to 10 (flawless):
{criteria}
and "total", your holistic score from 0 to 10.
Reply with exactly one JSON object with these keys and integer values, nothing else.

Problem:
{problem}

Reference answer: {reference}

Reasoning:
{reasoning}
"""
DESCRIPTIONS = {
    "problem_understanding": "reads the quantities and the question correctly",
    "solution_strategy": "the plan leads to the answer without missing or extra steps",
    "step_coherence": "each step follows from earlier ones, in order",
    "calculation_correctness": "every computation is right",
    "answer_support": "the conclusion is supported by the steps and not stated early",
    "task_understanding": "understands what the program must do",
    "plan_quality": "the plan is complete and efficient",
    "action_support": "the plan supports writing the program",
    "non_leakage": "describes a plan instead of giving the final code",
}


class JudgeReplyError(ValueError):
    """A judge reply that is not the required JSON object."""


def parse_judge_reply(text: str, names: Sequence[str]) -> tuple[dict[str, float], float]:
    """(dimension scores, total) on 0..10 from a reply, or JudgeReplyError saying what is wrong."""
    try:
        reply = json.loads(text)
    except json.JSONDecodeError as error:
        raise JudgeReplyError(f"invalid JSON ({error.msg} at char {error.pos})") from None
    if not isinstance(reply, dict):
        raise JudgeReplyError(f"expected a JSON object, got {type(reply).__name__}")
    expected = {*names, "total"}
    if set(reply) != expected:
        missing, extra = sorted(expected - set(reply)), sorted(set(reply) - expected)
        raise JudgeReplyError(f"wrong keys (missing {missing}, unexpected {extra})")
    for key, value in reply.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
            raise JudgeReplyError(f"{key} must be a number in 0..10, got {value!r}")
    return {name: float(reply[name]) for name in names}, float(reply["total"])


class JudgeLabeler:
    """Rubric labels from a judge model behind any `Executor` (HF, vLLM, an OpenAI-compatible server).

    Args:
        executor: the judge backend (one sample per prompt; the first attempt greedy, retries sampled).
        dimension_names: the 5 rubric dimensions (math by default).
        retries: extra attempts for candidates whose reply was invalid.
        label_positives: also judge the reference traces (default: they get the top rubric, as the authors').
    """

    name = "judge"

    def __init__(
        self,
        executor: Executor,
        dimension_names: Sequence[str] = MATH_DIMENSIONS,
        retries: int = 2,
        label_positives: bool = False,
    ) -> None:
        if retries < 0:
            raise ConfigError(f"labeler.retries must be >= 0, got {retries}")
        self.executor = executor
        self.dimension_names = tuple(dimension_names)
        self.retries = retries
        self.label_positives = label_positives
        self.failures: list[dict] = []

    def prompt(self, request: LabelRequest) -> ChatPrompt:
        criteria = "\n".join(
            f'"{n}": {DESCRIPTIONS.get(n, n.replace("_", " "))}' for n in self.dimension_names
        )
        user = TEMPLATE.format(
            criteria=criteria,
            problem=request.problem,
            reference=request.reference,
            reasoning=request.reasoning,
        )
        return ChatPrompt(user=user, system=SYSTEM, prefill="{")

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[dict | None]:
        """One rubric per request, or None (recorded in `failures`) after 1 + retries invalid replies."""
        labels: list[dict | None] = [None] * len(requests)
        last_error: dict[int, str] = {}
        pending = list(range(len(requests)))
        for attempt in range(1 + self.retries):
            if not pending:
                break
            results = self.executor.generate(
                [self.prompt(requests[i]) for i in pending], 1, greedy=attempt == 0
            )
            still = []
            for index, result in zip(pending, results, strict=True):
                if not result.ok:
                    last_error[index] = f"executor error: {result.error}"
                    still.append(index)
                    continue
                reply = "{" + result.texts[0]
                try:
                    scores, total = parse_judge_reply(reply.strip(), self.dimension_names)
                except JudgeReplyError as error:
                    last_error[index] = f"{error}; reply: {reply[:200]!r}"
                    still.append(index)
                    continue
                labels[index] = judge_scores_to_rubric(self.dimension_names, scores, total)
            pending = still
        for index in pending:
            request = requests[index]
            self.failures.append(
                {
                    "problem_id": request.problem_id,
                    "kind": request.kind,
                    "attempts": 1 + self.retries,
                    "error": last_error[index],
                }
            )
        if pending:
            log.warning("judge: %d of %d candidates got no valid reply", len(pending), len(requests))
        return labels
