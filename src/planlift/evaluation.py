"""Judging reasonings end to end: executor with the reasoning vs alone, leakage and trace metrics.

Validation during training and the bootstrap's report both use `evaluate_reasonings`, and it judges
with `Task.verify`, the same verifier the reward uses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from planlift.executors.base import Executor
from planlift.rewards.grounded import BaselineCache, executor_baseline
from planlift.tasks.base import Problem, Task


@dataclass
class EvalRecord:
    """One problem: the reasoning, what the executor made of it, and the metrics."""

    problem_id: str
    reasoning: str | None
    executor_outputs: tuple[str, ...]
    e2e: float | None  # success rate with the reasoning (None: executor failed)
    baseline: float | None  # success rate without reasoning
    leakage: float
    trace: dict[str, float] = field(default_factory=dict)

    @property
    def uplift(self) -> float | None:
        if self.e2e is None or self.baseline is None:
            return None
        return self.e2e - self.baseline


def evaluate_reasonings(
    task: Task,
    executor: Executor,
    problems: Sequence[Problem],
    reasonings: Sequence[str],
    cache: BaselineCache,
    samples: int = 1,
    greedy: bool = True,
) -> list[EvalRecord]:
    """Two executor calls: all reasonings, then the (cached) no-reasoning baseline."""
    results = executor.generate(
        [task.executor_prompt(p, r) for p, r in zip(problems, reasonings, strict=True)],
        samples,
        greedy=greedy,
    )
    baselines = executor_baseline(executor, task, problems, cache, samples, greedy)
    judged = [(p, text) for p, r in zip(problems, results, strict=True) if r.ok for text in r.texts]
    verdicts = iter(task.verify_batch([p for p, _ in judged], [t for _, t in judged], early_exit=True))
    records = []
    for problem, reasoning, result, baseline in zip(problems, reasonings, results, baselines, strict=True):
        e2e = None
        if result.ok:
            e2e = sum(next(verdicts).correct for _ in result.texts) / len(result.texts)
        records.append(
            EvalRecord(
                problem_id=problem.id,
                reasoning=reasoning,
                executor_outputs=result.texts,
                e2e=e2e,
                baseline=None if baseline is None else sum(baseline) / len(baseline),
                leakage=float(task.detect_leakage(problem, reasoning)),
                trace=task.trace_metrics(problem, reasoning, result.texts[0] if result.ok else None),
            )
        )
    return records


def summarize(records: Sequence[EvalRecord]) -> dict[str, float]:
    """Means over problems: e2e_acc, baseline_acc, uplift, leakage, trace/*, and the failure count."""
    sums: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record.e2e is not None:
            sums["e2e_acc"].append(record.e2e)
        if record.baseline is not None:
            sums["baseline_acc"].append(record.baseline)
        if record.uplift is not None:
            sums["uplift"].append(record.uplift)
        sums["leakage"].append(record.leakage)
        for key, value in record.trace.items():
            sums[key].append(value)
    summary = {key: sum(values) / len(values) for key, values in sums.items()}
    summary["executor_failed"] = float(sum(r.e2e is None for r in records))
    return summary


def pass_at_k(records: Sequence[EvalRecord], k: int) -> float:
    """Share of problems with at least one success among their k records (records grouped per problem:
    [p0 x k, p1 x k, ...]); a record whose executor call failed counts as a failure."""
    if not records or len(records) % k:
        raise ValueError(f"{len(records)} records do not split into groups of {k}")
    groups = [records[start : start + k] for start in range(0, len(records), k)]
    return sum(any((r.e2e or 0.0) > 0 for r in group) for group in groups) / len(groups)
