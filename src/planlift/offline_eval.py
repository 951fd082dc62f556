"""Offline evaluation of a planner + frozen executor pair on one split of a task (`src/evaluate.py`).

Arms, per problem:
- planner: the planner's reasoning (greedy or sampled), then the executor with it (k samples);
- alone:   the executor without reasoning (k samples), cached on disk per executor + task + split, so
           comparing several planners pays for it once;
- gold:    the executor with the data's reference reasoning (GSM8K solutions), the executor's ceiling
           (only for tasks that have gold reasoning).
Outputs in `output_dir`: problems.jsonl (every prompt's texts and verdicts), summary.json, and TensorBoard
scalars / a histogram of the per-problem uplift under tensorboard/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from planlift.errors import ConfigError, ExecutorUnavailableError
from planlift.executors.base import Executor
from planlift.grpo.rollout import sample_rollout
from planlift.judging import (
    BaselineCache,
    Judgement,
    ReasoningRecord,
    judge_alone,
    judge_reasonings,
    sandbox_failed,
    summarize,
)
from planlift.models.policy import Policy
from planlift.tasks.base import SANDBOX_ERROR, SPLITS, Task

log = logging.getLogger(__name__)

ARMS = ("planner", "alone", "gold")


class OfflineEvaluation:
    """Args:
    task / executor / policy: the parts (policy None: the planner arm is skipped).
    split / limit: which problems (the first `limit` of the split).
    arms: a subset of planner | alone | gold.
    executor_samples: k executor samples per prompt; executor_greedy: greedy decoding (then k = 1).
    planner_greedy / planner_temperature / planner_top_p / planner_max_new_tokens: planner decoding.
    batch_size: problems per step (the planner's batch; the executor splits by max_batch_prompts).
    output_dir: where the outputs go; cache_dir: the executor-alone cache (None = no cache).
    """

    def __init__(
        self,
        task: Task,
        executor: Executor,
        policy: Policy | None,
        output_dir: str,
        split: str = "test",
        limit: int | None = None,
        arms: Sequence[str] = ARMS,
        executor_samples: int = 1,
        executor_greedy: bool = True,
        planner_greedy: bool = True,
        planner_temperature: float = 0.7,
        planner_top_p: float = 1.0,
        planner_max_new_tokens: int = 192,
        batch_size: int = 16,
        cache_dir: str | None = None,
        progress_bar: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be >= 1 or null, got {limit}")
        unknown = [a for a in arms if a not in ARMS]
        if unknown or not arms:
            raise ConfigError(f"arms must be a non-empty subset of {list(ARMS)}, got {list(arms)}")
        if executor_samples < 1:
            raise ConfigError(f"executor_samples must be >= 1, got {executor_samples}")
        if executor_greedy and executor_samples > 1:
            raise ConfigError("executor_greedy=true gives identical samples: set executor_samples=1")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if "planner" in arms and policy is None:
            raise ConfigError("arms include 'planner' but no planner model is configured (model=...)")
        self.task = task
        self.executor = executor
        self.policy = policy
        self.output_dir = Path(output_dir)
        self.split = split
        self.limit = limit
        self.arms = tuple(arms)
        self.k = executor_samples
        self.executor_greedy = executor_greedy
        self.planner_greedy = planner_greedy
        self.planner_temperature = planner_temperature
        self.planner_top_p = planner_top_p
        self.planner_max_new_tokens = planner_max_new_tokens
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress_bar = progress_bar
        self.timings: dict[str, float] = Counter()
        self.alone_cached = 0

    # ---- the run ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        problems = list(self.task.problems(self.split))[: self.limit]
        if not problems:
            raise ConfigError(f"task {self.task.name!r} has no {self.split} problems")
        arms = list(self.arms)
        if "gold" in arms and self.task.gold_reasoning(problems[0]) is None:
            log.info("task %s has no gold reasoning: the gold arm is skipped", self.task.name)
            arms.remove("gold")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        alone_cache = self._alone_cache()
        rows: list[dict[str, Any]] = []
        records: dict[str, list[ReasoningRecord]] = {arm: [] for arm in arms if arm != "alone"}
        start = time.perf_counter()
        # rows are written as batches finish, so an interrupted run keeps what it judged
        with (
            self._progress(len(problems)) as advance,
            (self.output_dir / "problems.jsonl").open("w") as jsonl,
        ):
            for offset in range(0, len(problems), self.batch_size):
                batch = problems[offset : offset + self.batch_size]
                batch_rows = self._evaluate_batch(batch, arms, alone_cache, records)
                for row in batch_rows:
                    jsonl.write(json.dumps(row) + "\n")
                jsonl.flush()
                rows += batch_rows
                alone_cache.save()
                advance(len(batch))
        self.timings["total"] = time.perf_counter() - start
        summary = self._summary(rows, records, arms, len(problems))
        self._write(rows, summary)
        return summary

    def _evaluate_batch(self, batch, arms, alone_cache, records) -> list[dict[str, Any]]:
        rows = [{"id": p.id, "problem": p.text, "answer": p.answer} for p in batch]
        hits_before = alone_cache.hits
        seconds: dict[str, float] = {}
        baseline = judge_alone(  # every test run: alone/pass_rate is compared with the arms' full runs
            self.executor, self.task, batch, alone_cache, self.k, self.executor_greedy, seconds, None
        )
        self.alone_cached += alone_cache.hits - hits_before
        self.timings["executor_alone"] += seconds.get("executor", 0.0) + seconds.get("verify", 0.0)
        for row, judgement in zip(rows, baseline, strict=True):
            row["alone"] = {
                "executor_outputs": list(judgement.texts),
                "verdicts": _verdicts_json(judgement),
                # a sandbox that could not run a program says nothing about it: left out, as in the arms
                "accuracy": None if sandbox_failed(judgement) else judgement.accuracy,
                "sandbox_failed": sandbox_failed(judgement),
                "executor_error": judgement.error,  # None when the executor answered
            }
        reasonings: dict[str, list[str]] = {}
        if "planner" in arms:
            tick = time.perf_counter()
            rollout = sample_rollout(
                self.policy,
                self.task,
                batch,
                1,
                greedy=self.planner_greedy,
                temperature=self.planner_temperature,
                top_p=self.planner_top_p,
                max_new_tokens=self.planner_max_new_tokens,
            )
            self.timings["planner"] += time.perf_counter() - tick
            reasonings["planner"] = [self.task.extract_reasoning(t) for t in rollout.texts]
            lengths = rollout.completion_lengths.tolist()
            for row, text, length in zip(rows, rollout.texts, lengths, strict=True):
                row["planner_completion"] = text
                row["planner_tokens"] = int(length)
        if "gold" in arms:
            reasonings["gold"] = [self.task.gold_reasoning(p) for p in batch]
        for arm, texts in reasonings.items():
            judged = judge_reasonings(  # every test run, as for the executor alone
                self.task,
                self.executor,
                batch,
                texts,
                alone_cache,
                self.k,
                self.executor_greedy,
                full_pass_rate=None,
                baselines=baseline,
                seconds=self.timings,
            )
            for row, item in zip(rows, judged, strict=True):
                records[arm].append(item)
                row[arm] = {
                    "reasoning": item.reasoning,
                    "executor_outputs": list(item.executor_outputs),
                    "verdicts": _verdicts_json(item.judgement),
                    "accuracy": item.with_reasoning,
                    "uplift": item.uplift,
                    "leakage": item.leakage,
                    "trace": item.trace,
                }
        return rows

    # ---- executor alone, cached on disk -----------------------------------------------------------

    def _alone_cache(self) -> BaselineCache:
        """The executor-alone judgements, kept on disk per executor + task + split + sampling, so that
        comparing several planners pays for them once (memory only without a cache_dir)."""
        if self.cache_dir is None:
            return BaselineCache()
        return BaselineCache(
            path=self.cache_dir / "eval_alone" / f"{self.task.name}-{self._alone_key()}.json"
        )

    def _alone_key(self) -> str:
        identity = {
            "executor": self.executor.identity,
            "task": self.task.fingerprint(),
            "split": self.split,
            "k": self.k,
            "greedy": self.executor_greedy,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ---- outputs ----------------------------------------------------------------------------------

    def _summary(self, rows, records, arms, n) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "task": self.task.name,
            "split": self.split,
            "problems": n,
            "executor": self.executor.identity,
            "planner": getattr(self.policy, "source", None),
            "executor_samples": self.k,
            "executor_greedy": self.executor_greedy,
            "planner_greedy": self.planner_greedy,
        }
        judged_arms = [arm for arm in arms if arm != "alone"]
        # every arm's accuracy and uplift over the same problems: those every arm's executor call judged
        common = [
            i
            for i, row in enumerate(rows)
            if row["alone"]["accuracy"] is not None
            and all(records[arm][i].with_reasoning is not None for arm in judged_arms)
        ]
        summary["problems_judged"] = len(common)
        summary["alone/acc"] = _mean([rows[i]["alone"]["accuracy"] for i in common])
        summary["alone/sandbox_failed"] = sum(r["alone"]["sandbox_failed"] for r in rows)
        failed = [r["alone"]["executor_error"] for r in rows if r["alone"]["executor_error"] is not None]
        summary["alone/executor_failed"] = len(failed)
        if failed:
            log.warning(
                "the executor failed on %d of %d problems without reasoning (every arm's accuracy leaves them "
                "out); "
                "first error: %s",
                len(failed),
                n,
                failed[0],
            )
        if len(failed) == n:
            raise ExecutorUnavailableError(
                f"the executor ({self.executor.identity}) failed on all {n} problems without reasoning: "
                f"nothing was measured; first error: {failed[0]}"
            )
        summary["alone/statuses"] = _statuses(r["alone"]["verdicts"] for r in rows)
        if self.task.task_type == "code":
            summary["alone/pass_rate"] = _mean(_judged_pass_rates(r["alone"]["verdicts"] for r in rows))
        for arm in arms:
            if arm == "alone":
                continue
            metrics = summarize(records[arm])  # leakage, trace/* and the failures: every record
            paired = summarize([records[arm][i] for i in common])
            summary[f"{arm}/acc"] = paired.get("e2e_acc")
            summary[f"{arm}/uplift"] = paired.get("uplift")
            summary[f"{arm}/leakage"] = metrics.get("leakage")
            summary[f"{arm}/executor_failed"] = metrics.get("executor_failed")
            summary[f"{arm}/sandbox_failed"] = metrics.get("sandbox_failed")
            for key, value in metrics.items():
                if key.startswith("trace/"):
                    summary[f"{arm}/{key}"] = value
            uplifts = [records[arm][i].uplift for i in common]
            summary[f"{arm}/uplift_distribution"] = _distribution(uplifts)
            summary[f"{arm}/statuses"] = _statuses(r[arm]["verdicts"] for r in rows)
            if self.task.task_type == "code":
                summary[f"{arm}/pass_rate"] = _mean(_judged_pass_rates(r[arm]["verdicts"] for r in rows))
        if len(common) < n:
            unjudged = {"alone": sum(row["alone"]["accuracy"] is None for row in rows)}
            unjudged |= {arm: sum(r.with_reasoning is None for r in records[arm]) for arm in judged_arms}
            log.warning(
                "%d of %d problems were judged in every arm: the accuracies and uplifts are over those "
                "(problems_judged); problems each arm could not judge (executor or sandbox failures): %s",
                len(common),
                n,
                ", ".join(f"{arm} {count}" for arm, count in unjudged.items()),
            )
        if "planner" in arms:
            summary["e2e_acc"] = summary["planner/acc"]
            summary["planner/mean_tokens"] = _mean([r["planner_tokens"] for r in rows])
        summary["executor_alone_acc"] = summary["alone/acc"]
        summary["seconds"] = {k: round(v, 2) for k, v in self.timings.items()}
        summary["executor_generations"] = self.executor.stats.generations
        summary["alone/from_cache"] = self.alone_cached
        return summary

    def _write(self, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.output_dir / "tensorboard"))
        try:
            for key, value in summary.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"eval/{key}", value, 0)
            for arm in ("planner", "gold"):
                uplifts = [r[arm]["uplift"] for r in rows if arm in r and r[arm]["uplift"] is not None]
                if uplifts:
                    import torch

                    writer.add_histogram(f"eval/{arm}/uplift", torch.tensor(uplifts), 0)
            writer.add_text("eval/summary", "```\n" + json.dumps(summary, indent=2) + "\n```", 0)
        finally:
            writer.close()

    def _progress(self, total: int):
        from contextlib import contextmanager

        @contextmanager
        def bar():
            if not self.progress_bar:
                yield lambda n: None
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (
                TextColumn(f"[bold]{self.task.name}/{self.split}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns) as progress:
                task_id = progress.add_task("problems", total=total)
                yield lambda n: progress.advance(task_id, n)

        return bar()


def _verdicts_json(judgement: Judgement) -> list[dict[str, Any]] | None:
    return None if judgement.verdicts is None else [asdict(v) for v in judgement.verdicts]


def _statuses(groups) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for verdicts in groups:
        for verdict in verdicts or []:
            counts[verdict["status"]] += 1
    return dict(sorted(counts.items()))


def _judged_pass_rates(groups) -> list[float]:
    """The pass rates of the programs that ran: a program the sandbox could not start has no verdict (its
    0.0 is no measurement), as the accuracies leave it out; `sandbox_failed` counts them."""
    return [v["pass_rate"] for verdicts in groups for v in (verdicts or []) if v["status"] != SANDBOX_ERROR]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _distribution(values: Sequence[float]) -> dict[str, Any]:
    """Uplift per problem: mean, std, quantiles and the share that is negative / zero / positive."""
    if not values:
        return {}
    ordered = sorted(values)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values),
        "min": ordered[0],
        "p25": quantile(0.25),
        "median": quantile(0.5),
        "p75": quantile(0.75),
        "max": ordered[-1],
        "negative": sum(v < 0 for v in values) / len(values),
        "zero": sum(v == 0 for v in values) / len(values),
        "positive": sum(v > 0 for v in values) / len(values),
    }
