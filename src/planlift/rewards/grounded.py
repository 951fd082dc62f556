"""The executor-grounded reward for a rollout batch (P problems x G planner samples).

One step costs at most two executor calls, whatever P and G are:
  1. every (problem, reasoning) prompt at once, `n` samples each: n = k when the e2e sample is pooled
     into the k repeats, k + 1 otherwise (the authors' scheme: e2e is a separate 4th sample);
  2. the no-reasoning baseline for the problems not yet in the cache (once per problem: it depends only
     on the problem and the frozen executor), `baseline_samples` each.
The RM scores every reasoning in one batched call. Failed executor or RM calls, and programs the
sandbox could not run (status sandbox_error), mask the affected samples (excluded from group statistics
and the loss) and are counted; a step with more than `max_masked_fraction` masked samples stops the run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

from planlift.errors import ConfigError, TooManyMaskedError
from planlift.executors.base import Executor
from planlift.judging import (
    BaselineCache,
    Judgement,
    judge,
    judge_alone,
    reasonings_as_read,
    sandbox_failed,
)
from planlift.rewards import formulas
from planlift.rewards.records import RewardBatch, RewardRecord
from planlift.rewards.variants import VARIANTS, Weights
from planlift.rm.base import ReasoningRM, RMItem
from planlift.tasks.base import SANDBOX_ERROR, Problem, Task

log = logging.getLogger(__name__)

MODES = tuple(VARIANTS)
LEAKAGE_POLICIES = ("metric", "penalty", "mask")


class ExecutorGroundedReward:
    """Scores planner completions by what a frozen executor does with them.

    Args (all validated; the message names the `reward.<key>`):
        mode: exec_only | grounded | uplift_only | rm_only | code_gated.
        repeats: k, executor samples with the reasoning for w (authors: 3).
        pool_e2e: the e2e sample is the first of the k repeats (k calls) instead of an extra one (k + 1).
        baseline_samples: executor samples without reasoning per problem (authors: 3, per completion).
        baseline_cache: reuse the baseline across steps (the executor is frozen).
        e2e_weight / reasoning_weight: the math formula's 0.5 / 0.5.
        uplift_bounds / rm_bounds: clamps.
        code_pass_weight / code_rm_weight / code_tie_coefficients: the code formula (0.8, 0.2, [0, .5, 2/3, 1]).
        code_pass_credit: pass_rate (the authors': 0.8 x the share of tests passed) | all_tests (0.8 only
            when every test passes; see `formulas.code_exec_score`).
        leakage_policy: metric (log only) | penalty (subtract leakage_penalty) | mask (a leaking sample
            leaves the loss: nothing pushes the planner away from leaking; penalty does).
        max_masked_fraction: stop the run when a step masks more than this share of samples for a failure
            (executor, sandbox, RM); leaks masked by leakage_policy=mask are the policy's doing, not one.
    """

    def __init__(
        self,
        executor: Executor,
        task: Task,
        rm: ReasoningRM | None = None,
        mode: str = "grounded",
        repeats: int = 3,
        pool_e2e: bool = False,
        baseline_samples: int = 3,
        baseline_cache: bool = True,
        e2e_weight: float = 0.5,
        reasoning_weight: float = 0.5,
        uplift_bounds: Sequence[float] = (-1.0, 1.0),
        rm_bounds: Sequence[float] = (0.0, 1.0),
        code_pass_weight: float = 0.8,
        code_rm_weight: float = 0.2,
        code_tie_coefficients: Sequence[float] = (0.0, 0.5, 2 / 3, 1.0),
        code_pass_credit: str = "pass_rate",
        leakage_policy: str = "metric",
        leakage_penalty: float = 0.5,
        max_masked_fraction: float = 0.9,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"reward.mode must be one of {list(MODES)}, got {mode!r}")
        for key, value in (("pool_e2e", pool_e2e), ("baseline_cache", baseline_cache)):
            if not isinstance(value, bool):
                raise ConfigError(f"reward.{key} must be true or false, got {value!r}")
        if repeats < 1:
            raise ConfigError(f"reward.repeats must be >= 1, got {repeats}")
        if baseline_samples < 1:
            raise ConfigError(f"reward.baseline_samples must be >= 1, got {baseline_samples}")
        for key, bounds in (("uplift_bounds", uplift_bounds), ("rm_bounds", rm_bounds)):
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ConfigError(f"reward.{key} must be [low, high] with low <= high, got {list(bounds)}")
        for key, value in (
            ("e2e_weight", e2e_weight),
            ("reasoning_weight", reasoning_weight),
            ("code_pass_weight", code_pass_weight),
            ("code_rm_weight", code_rm_weight),
            ("leakage_penalty", leakage_penalty),
        ):
            if value < 0:
                raise ConfigError(f"reward.{key} must be >= 0, got {value}")
        if len(code_tie_coefficients) < 2:
            raise ConfigError("reward.code_tie_coefficients needs one value per success count (>= 2 values)")
        if code_pass_credit not in formulas.CODE_PASS_CREDITS:
            raise ConfigError(
                f"reward.code_pass_credit must be one of {list(formulas.CODE_PASS_CREDITS)}, got "
                f"{code_pass_credit!r}"
            )
        if leakage_policy not in LEAKAGE_POLICIES:
            raise ConfigError(
                f"reward.leakage_policy must be one of {list(LEAKAGE_POLICIES)}, got {leakage_policy!r}"
            )
        if not 0 < max_masked_fraction <= 1:
            raise ConfigError(f"reward.max_masked_fraction must be in (0, 1], got {max_masked_fraction}")
        variant = VARIANTS[mode]
        if variant.uses_rm and rm is None:
            raise ConfigError(f"reward.mode={mode} needs a reasoning RM (config group rm)")
        if mode in ("grounded", "uplift_only", "rm_only"):
            _check_math_terms(mode, e2e_weight, reasoning_weight, uplift_bounds, rm_bounds, variant)
        _check_unused_terms(
            mode,
            e2e_weight=e2e_weight,
            reasoning_weight=reasoning_weight,
            uplift_bounds=tuple(uplift_bounds),
            code_pass_weight=code_pass_weight,
            code_rm_weight=code_rm_weight,
            code_tie_coefficients=tuple(code_tie_coefficients),
            code_pass_credit=code_pass_credit,
        )
        if mode == "code_gated":
            if task.task_type != "code":
                raise ConfigError(
                    f"reward.mode=code_gated scores programs (pass rate and run status) and needs a code "
                    f"task; task={task.name!r} is a {task.task_type} task"
                )
            if len(code_tie_coefficients) != repeats + 1:
                raise ConfigError(
                    f"reward.code_tie_coefficients has {len(code_tie_coefficients)} values; the tie table "
                    f"needs one per success count 0..reward.repeats ({repeats + 1} values)"
                )
            if baseline_samples != repeats:
                raise ConfigError(
                    f"reward.mode=code_gated compares success counts: reward.baseline_samples "
                    f"({baseline_samples}) must equal reward.repeats ({repeats})"
                )
        if variant.uses_rm:
            rm.prepare(task)
        self.executor = executor
        self.task = task
        self.rm = rm
        self.mode = mode
        self.variant = variant
        self.repeats = repeats
        self.pool_e2e = pool_e2e
        self.baseline_samples = baseline_samples
        self.baseline_cache = BaselineCache(enabled=baseline_cache)
        self.uplift_bounds = tuple(uplift_bounds)
        self.weights = Weights(
            e2e=e2e_weight,
            reasoning=reasoning_weight,
            rm_bounds=tuple(rm_bounds),
            code_pass=code_pass_weight,
            code_rm=code_rm_weight,
            code_tie_coefficients=tuple(code_tie_coefficients),
            code_pass_credit=code_pass_credit,
        )
        self.leakage_policy = leakage_policy
        self.leakage_penalty = leakage_penalty
        self.max_masked_fraction = max_masked_fraction

    @property
    def uses_uplift(self) -> bool:
        return self.variant.uses_uplift

    @property
    def uses_rm(self) -> bool:
        return self.variant.uses_rm

    @property
    def samples_with_reasoning(self) -> int:
        """Executor samples per planner completion."""
        if not self.uses_uplift:
            return 1
        return self.repeats if self.pool_e2e else self.repeats + 1

    def __call__(
        self, problems: Sequence[Problem], completions: Sequence[str], group_size: int
    ) -> RewardBatch:
        """Rewards for `completions` ([P * G], grouped per problem) of `problems` ([P])."""
        if len(completions) != len(problems) * group_size:
            raise ValueError(f"{len(completions)} completions for {len(problems)} problems x {group_size}")
        rows = [p for p in problems for _ in range(group_size)]
        reasonings = reasonings_as_read(self.executor, self.task, completions)  # what every judge reads

        seconds: dict[str, float] = {}
        generations_before = self.executor.stats.generations
        # the e2e sample (the first) needs its full pass rate; the repeats need success only
        judged = judge(
            self.executor, self.task, rows, reasonings, self.samples_with_reasoning, False, 1, seconds
        )
        baselines = (
            judge_alone(
                self.executor, self.task, problems, self.baseline_cache, self.baseline_samples, False, seconds
            )
            if self.uses_uplift
            else [None] * len(problems)
        )
        generations = self.executor.stats.generations - generations_before

        start = time.perf_counter()
        rm_scores: list[float | None] = [None] * len(rows)
        if self.uses_rm:
            items = [
                RMItem(p, r, self.task.name, self.task.task_type)
                for p, r in zip(rows, reasonings, strict=True)
            ]
            rm_scores = self._score_rm(items)
        seconds["rm"] = time.perf_counter() - start

        records = [
            self._record(problem, reasoning, judgement, baselines[i // group_size], rm_score)
            for i, (problem, reasoning, judgement, rm_score) in enumerate(
                zip(rows, reasonings, judged, rm_scores, strict=True)
            )
        ]
        stats = {f"time/{phase}": value for phase, value in seconds.items()}
        stats["executor_generations_per_problem"] = generations / len(problems)
        stats["baseline_cache_size"] = float(len(self.baseline_cache.entries))
        if self.uses_rm:  # the RM's own counters (an HTTP service's failures by kind), cumulative
            stats.update({f"rm/{key}": value for key, value in self.rm.metrics().items()})
        batch = RewardBatch(records, group_size, stats, reasonings)
        masked = sum(r.masked for r in records)
        if masked:
            log.warning(
                "reward: masked %d of %d samples (%s)",
                masked,
                len(records),
                ", ".join(sorted({r.mask_reason for r in records if r.masked})),
            )
        failed = [r for r in records if r.masked and r.mask_reason != "leakage"]
        if len(failed) / len(records) > self.max_masked_fraction:
            errors = [j.error for j in [*judged, *baselines] if j is not None and j.error]
            raise TooManyMaskedError(
                f"{len(failed)} of {len(records)} samples masked for failures in one step "
                f"(reward.max_masked_fraction={self.max_masked_fraction}); reasons: "
                f"{sorted({r.mask_reason for r in failed})}"
                + (f"; first executor error ({self.executor.identity}): {errors[0]}" if errors else "")
            )
        return batch

    def _score_rm(self, items: list[RMItem]) -> list[float | None]:
        assert self.rm is not None
        try:
            scores = self.rm.score(items)
        except (RuntimeError, OSError, ValueError) as error:
            if isinstance(error, ConfigError):
                raise
            log.exception("reasoning RM failed for a batch of %d", len(items))
            return [None] * len(items)
        if len(scores) != len(items):
            raise RuntimeError(f"RM returned {len(scores)} scores for {len(items)} items")
        return scores

    def _record(
        self,
        problem: Problem,
        reasoning: str,
        judgement: Judgement,
        baseline: Judgement | None,
        rm_score: float | None,
    ) -> RewardRecord:
        leak = float(self.task.detect_leakage(problem, reasoning))
        if not judgement.ok:
            return RewardRecord(leakage=leak, mask_reason="executor_error")
        verdicts = judgement.verdicts
        e2e_verdict = verdicts[0]
        e2e = float(e2e_verdict.correct)
        if sandbox_failed(judgement):  # e2e stays when its own program ran (a repeat's did not)
            e2e_or_none = None if e2e_verdict.status == SANDBOX_ERROR else e2e
            return RewardRecord(e2e=e2e_or_none, leakage=leak, mask_reason="sandbox_error")
        if self.uses_uplift and not baseline.ok:
            return RewardRecord(e2e=e2e, leakage=leak, mask_reason="baseline_executor_error")
        if self.uses_uplift and sandbox_failed(baseline):
            return RewardRecord(e2e=e2e, leakage=leak, mask_reason="sandbox_error")
        if self.uses_rm and rm_score is None:
            return RewardRecord(e2e=e2e, leakage=leak, mask_reason="rm_error")
        if self.uses_rm and not math.isfinite(rm_score):  # clamped, NaN would read as the top score
            return RewardRecord(e2e=e2e, leakage=leak, mask_reason="rm_non_finite")
        if self.leakage_policy == "mask" and leak:
            return RewardRecord(e2e=e2e, leakage=leak, mask_reason="leakage")

        terms: dict[str, float] = {"e2e": e2e, "leakage": leak}
        if self.uses_uplift:
            repeats = verdicts if self.pool_e2e else verdicts[1:]
            terms["w"] = formulas.success_rate(repeats)
            terms["b"] = baseline.accuracy
            terms["uplift"] = formulas.uplift(terms["w"], terms["b"], self.uplift_bounds)
        if self.uses_rm:
            terms["rm"] = rm_score
        terms["final"] = self.variant.compose(terms, e2e_verdict, self.weights)
        if self.leakage_policy == "penalty" and leak:
            terms["final"] -= self.leakage_penalty
        return RewardRecord(**terms)


# The keys one family of formulas reads and the other does not, at their defaults (conf/reward/grounded.yaml)
_MATH_ONLY = {"e2e_weight": 0.5, "reasoning_weight": 0.5, "uplift_bounds": (-1.0, 1.0)}
_CODE_ONLY = {
    "code_pass_weight": 0.8,
    "code_rm_weight": 0.2,
    "code_tie_coefficients": (0.0, 0.5, 2 / 3, 1.0),
    "code_pass_credit": "pass_rate",
}


def _check_unused_terms(mode: str, **values) -> None:
    """A key the chosen formula never reads, set away from its default, would change nothing: refuse it
    (code_gated gates on success counts, with its own weights; the math modes never read the code_* keys)."""
    unused = _MATH_ONLY if mode == "code_gated" else _CODE_ONLY
    for key, default in unused.items():
        value = values[key]
        same = (
            len(value) == len(default)
            and all(math.isclose(a, b) for a, b in zip(value, default, strict=True))
            if isinstance(default, tuple)
            else value == default
        )
        if not same:
            why = "its gate compares success counts" if mode == "code_gated" else "code_* are code_gated's"
            shown = list(value) if isinstance(default, tuple) else value
            kept = list(default) if isinstance(default, tuple) else default
            raise ConfigError(
                f"reward.{key}={shown} is not read by reward.mode={mode} ({why}): leave it at {kept}"
            )


def _check_math_terms(mode, e2e_weight, reasoning_weight, uplift_bounds, rm_bounds, variant) -> None:
    """A math formula whose every term is 0 for every sample gives GRPO nothing to learn from: refuse it,
    naming the keys, rather than train on a silent zero reward."""
    for key, bounds, used in (
        ("uplift_bounds", uplift_bounds, variant.uses_uplift),
        ("rm_bounds", rm_bounds, variant.uses_rm),
    ):
        if reasoning_weight > 0 and used and bounds[0] == bounds[1] == 0:
            raise ConfigError(
                f"reward.{key}={list(bounds)} clamps the reasoning term of reward.mode={mode} to 0; to leave "
                "the reasoning term out, set reward.reasoning_weight=0"
            )
    if e2e_weight == 0 and reasoning_weight == 0:
        raise ConfigError(
            f"reward.e2e_weight and reward.reasoning_weight are both 0: reward.mode={mode} would give every "
            "sample the reward 0"
        )
