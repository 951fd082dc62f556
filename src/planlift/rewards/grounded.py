"""The executor-grounded reward for a rollout batch (P problems x G planner samples).

One step costs at most two executor calls, whatever P and G are:
  1. every (problem, reasoning) prompt at once, `n` samples each: n = k when the e2e sample is pooled
     into the k repeats, k + 1 otherwise (the authors' scheme: e2e is a separate 4th sample);
  2. the no-reasoning baseline for the problems not yet in the cache (once per problem: it depends only
     on the problem and the frozen executor), `baseline_samples` each.
The RM scores every reasoning in one batched call. Failed executor or RM calls mask the affected
samples (excluded from group statistics and the loss) and are counted; a step with more than
`max_masked_fraction` masked samples stops the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from planlift.errors import ConfigError, TooManyMaskedError
from planlift.executors.base import Executor, ExecutorResult
from planlift.rewards import formulas
from planlift.rewards.records import RewardBatch, RewardRecord
from planlift.rm.base import ReasoningRM, RMItem
from planlift.tasks.base import Problem, Task, Verdict

log = logging.getLogger(__name__)

MODES = ("exec_only", "grounded", "uplift_only", "rm_only", "code_gated")
LEAKAGE_POLICIES = ("metric", "penalty", "mask")
_NEEDS_UPLIFT = {"grounded", "uplift_only", "code_gated"}
_NEEDS_RM = {"grounded", "rm_only", "code_gated"}


@dataclass
class BaselineCache:
    """No-reasoning executor outcomes per problem. Valid only while the executor is frozen."""

    enabled: bool = True
    entries: dict[str, tuple[bool, ...]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    @staticmethod
    def key(executor: Executor, problem: Problem, samples: int, greedy: bool) -> str:
        return f"{executor.identity}|{problem.id}|n={samples}|greedy={greedy}"

    def get(self, key: str) -> tuple[bool, ...] | None:
        found = self.entries.get(key) if self.enabled else None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: str, outcomes: tuple[bool, ...]) -> None:
        if self.enabled:
            self.entries[key] = outcomes

    def state_dict(self) -> dict:
        return {"entries": {k: list(v) for k, v in self.entries.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.entries = {k: tuple(v) for k, v in state.get("entries", {}).items()}


def executor_baseline(
    executor: Executor,
    task: Task,
    problems: Sequence[Problem],
    cache: BaselineCache,
    samples: int,
    greedy: bool = False,
) -> list[tuple[bool, ...] | None]:
    """Success outcomes of the executor alone, per problem: cached ones, plus one call for the rest.

    None for a problem whose executor call failed (not cached; retried next time)."""
    keys = [cache.key(executor, p, samples, greedy) for p in problems]
    outcomes: dict[str, tuple[bool, ...] | None] = {}
    missing: dict[str, Problem] = {}
    for key, problem in zip(keys, problems, strict=True):
        if key in outcomes or key in missing:
            continue
        found = cache.get(key)
        if found is None:
            missing[key] = problem
        else:
            outcomes[key] = found
    if missing:
        prompts = [task.executor_prompt(p, None) for p in missing.values()]
        results = executor.generate(prompts, samples, greedy=greedy)
        judged = [
            (p, text) for p, r in zip(missing.values(), results, strict=True) if r.ok for text in r.texts
        ]
        verdicts = iter(task.verify_batch([p for p, _ in judged], [t for _, t in judged], early_exit=True))
        for (key, _), result in zip(missing.items(), results, strict=True):
            if not result.ok:
                outcomes[key] = None
                continue
            found = tuple(next(verdicts).correct for _ in result.texts)
            cache.put(key, found)
            outcomes[key] = found
    return [outcomes[key] for key in keys]


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
        leakage_policy: metric (log only) | penalty (subtract leakage_penalty) | mask.
        max_masked_fraction: stop the run when a step masks more than this share of samples.
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
        leakage_policy: str = "metric",
        leakage_penalty: float = 0.5,
        max_masked_fraction: float = 0.9,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"reward.mode must be one of {list(MODES)}, got {mode!r}")
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
        if leakage_policy not in LEAKAGE_POLICIES:
            raise ConfigError(
                f"reward.leakage_policy must be one of {list(LEAKAGE_POLICIES)}, got {leakage_policy!r}"
            )
        if not 0 < max_masked_fraction <= 1:
            raise ConfigError(f"reward.max_masked_fraction must be in (0, 1], got {max_masked_fraction}")
        if mode in _NEEDS_RM and rm is None:
            raise ConfigError(f"reward.mode={mode} needs a reasoning RM (config group rm)")
        self.executor = executor
        self.task = task
        self.rm = rm
        self.mode = mode
        self.repeats = repeats
        self.pool_e2e = pool_e2e
        self.baseline_samples = baseline_samples
        self.baseline_cache = BaselineCache(enabled=baseline_cache)
        self.e2e_weight = e2e_weight
        self.reasoning_weight = reasoning_weight
        self.uplift_bounds = tuple(uplift_bounds)
        self.rm_bounds = tuple(rm_bounds)
        self.code_pass_weight = code_pass_weight
        self.code_rm_weight = code_rm_weight
        self.code_tie_coefficients = tuple(code_tie_coefficients)
        self.leakage_policy = leakage_policy
        self.leakage_penalty = leakage_penalty
        self.max_masked_fraction = max_masked_fraction
        self.timings: dict[str, float] = {}
        self.last_generations_per_problem = 0.0

    @property
    def uses_uplift(self) -> bool:
        return self.mode in _NEEDS_UPLIFT

    @property
    def uses_rm(self) -> bool:
        return self.mode in _NEEDS_RM

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
        reasonings = [self.task.extract_reasoning(c) for c in completions]

        start = time.perf_counter()
        generations_before = self.executor.stats.generations
        prompts = [self.task.executor_prompt(p, r) for p, r in zip(rows, reasonings, strict=True)]
        with_results = self.executor.generate(prompts, self.samples_with_reasoning)
        baselines = (
            executor_baseline(self.executor, self.task, problems, self.baseline_cache, self.baseline_samples)
            if self.uses_uplift
            else [None] * len(problems)
        )
        self.timings["executor"] = time.perf_counter() - start
        self.last_generations_per_problem = (self.executor.stats.generations - generations_before) / len(
            problems
        )

        start = time.perf_counter()
        rm_scores: list[float | None] = [None] * len(rows)
        if self.uses_rm:
            items = [
                RMItem(p, r, self.task.name, self.task.task_type)
                for p, r in zip(rows, reasonings, strict=True)
            ]
            rm_scores = self._score_rm(items)
        self.timings["rm"] = time.perf_counter() - start

        start = time.perf_counter()
        verdicts = self._verdicts(rows, with_results)
        self.timings["verify"] = time.perf_counter() - start
        records = [
            self._record(problem, reasoning, result, verdict, baselines[i // group_size], rm_score)
            for i, (problem, reasoning, result, verdict, rm_score) in enumerate(
                zip(rows, reasonings, with_results, verdicts, rm_scores, strict=True)
            )
        ]
        batch = RewardBatch(records, group_size)
        masked = sum(r.masked for r in records)
        if masked:
            log.warning(
                "reward: masked %d of %d samples (%s)",
                masked,
                len(records),
                ", ".join(sorted({r.mask_reason for r in records if r.masked})),
            )
        if masked / len(records) > self.max_masked_fraction:
            raise TooManyMaskedError(
                f"{masked} of {len(records)} samples masked in one step (reward.max_masked_fraction="
                f"{self.max_masked_fraction}); reasons: {sorted({r.mask_reason for r in records if r.masked})}"
            )
        return batch

    def _verdicts(self, rows: Sequence[Problem], results: Sequence[ExecutorResult]) -> list[list[Verdict]]:
        """Every executor text judged in one `verify_batch` call; only the e2e sample (the first) needs
        a full pass rate, the repeats need success only."""
        flat = [
            (p, text, j > 0)
            for p, r in zip(rows, results, strict=True)
            if r.ok
            for j, text in enumerate(r.texts)
        ]
        judged = iter(
            self.task.verify_batch(
                [p for p, _, _ in flat], [t for _, t, _ in flat], early_exit=[e for *_, e in flat]
            )
        )
        return [[next(judged) for _ in r.texts] if r.ok else [] for r in results]

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
        result: ExecutorResult,
        verdicts: list[Verdict],
        baseline: tuple[bool, ...] | None,
        rm_score: float | None,
    ) -> RewardRecord:
        leak = float(self.task.detect_leakage(problem, reasoning))
        if not result.ok:
            return RewardRecord(leakage=leak, mask_reason="executor_error")
        e2e_verdict = verdicts[0]
        e2e = float(e2e_verdict.correct)
        if self.uses_uplift and baseline is None:
            return RewardRecord(e2e=e2e, leakage=leak, mask_reason="baseline_executor_error")
        if self.uses_rm and rm_score is None:
            return RewardRecord(e2e=e2e, leakage=leak, mask_reason="rm_error")
        if self.leakage_policy == "mask" and leak:
            return RewardRecord(e2e=e2e, leakage=leak, mask_reason="leakage")

        terms: dict[str, float] = {"e2e": e2e, "leakage": leak}
        if self.uses_uplift:
            repeats = verdicts if self.pool_e2e else verdicts[1:]
            terms["w"] = formulas.success_rate(repeats)
            terms["b"] = sum(baseline) / len(baseline)
            terms["uplift"] = formulas.uplift(terms["w"], terms["b"], self.uplift_bounds)
        if self.uses_rm:
            terms["rm"] = rm_score
        terms["final"] = self._compose(terms, e2e_verdict)
        if self.leakage_policy == "penalty" and leak:
            terms["final"] -= self.leakage_penalty
        return RewardRecord(**terms)

    def _compose(self, terms: dict[str, float], e2e_verdict: Verdict) -> float:
        mode = self.mode
        if mode == "exec_only":
            return terms["e2e"]
        if mode == "grounded":
            return formulas.grounded_reward(
                terms["e2e"],
                terms["rm"],
                terms["uplift"],
                self.e2e_weight,
                self.reasoning_weight,
                self.rm_bounds,
            )
        if mode == "uplift_only":
            return formulas.uplift_only_reward(
                terms["e2e"], terms["uplift"], self.e2e_weight, self.reasoning_weight
            )
        if mode == "rm_only":
            return formulas.rm_only_reward(
                terms["e2e"], terms["rm"], self.e2e_weight, self.reasoning_weight, self.rm_bounds
            )
        # code_gated: the gate compares success counts with and without the reasoning.
        terms["exec"] = formulas.code_exec_score(e2e_verdict, self.code_pass_weight)
        terms["coeff"] = formulas.code_uplift_coefficient(terms["w"], terms["b"], self.code_tie_coefficients)
        return formulas.code_gated_reward(terms["exec"], terms["rm"], terms["coeff"], self.code_rm_weight)
