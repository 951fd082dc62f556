"""Judging reasonings: the frozen executor turns problem + reasoning into outputs, the task's verifier
judges them. The one place that does it, for the reward, validation, offline evaluation and the
bootstrap's report.

- `judge`: one executor call for all prompts (with a reasoning, or alone when it is None) and one
  `verify_batch` call for all outputs, regrouped per prompt.
- `judge_alone` + `BaselineCache`: the executor without reasoning, once per problem while the executor
  is frozen (in memory, in checkpoints via `state_dict`, and on disk for offline evaluation).
- `reasonings_as_read` / `as_read`: a reasoning as it reaches the executor's model; every judge (the
  executor, the leakage detectors, the RM, the trace metrics) reads that text and no other.
- `judge_reasonings` -> `ReasoningRecord`s: with-reasoning success, baseline, uplift, leakage and
  trace metrics per problem; `summarize` and `pass_at_k` aggregate them, from sums and counts (`tally`,
  `pass_counts`) that add up over batches and ranks (the GRPO module's validation).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from planlift.atomic import save_atomically
from planlift.executors.base import Executor
from planlift.tasks.base import SANDBOX_ERROR, Problem, Task, Verdict


@dataclass(frozen=True)
class Judgement:
    """One prompt's executor samples and their verdicts (`verdicts` None: the executor call failed)."""

    texts: tuple[str, ...]
    verdicts: tuple[Verdict, ...] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdicts is not None

    @property
    def successes(self) -> tuple[bool, ...]:
        return tuple(v.correct for v in self.verdicts or ())

    @property
    def accuracy(self) -> float | None:
        """Share of the samples judged correct (None when the call failed)."""
        if not self.verdicts:
            return None
        return sum(self.successes) / len(self.verdicts)

    def to_json(self) -> dict:
        verdicts = None if self.verdicts is None else [asdict(v) for v in self.verdicts]
        return {"texts": list(self.texts), "verdicts": verdicts, "error": self.error}

    @classmethod
    def from_json(cls, data: dict) -> Judgement:
        verdicts = data["verdicts"]
        return cls(
            tuple(data["texts"]),
            None if verdicts is None else tuple(Verdict(**v) for v in verdicts),
            data.get("error"),
        )


def judge(
    executor: Executor,
    task: Task,
    problems: Sequence[Problem],
    reasonings: Sequence[str | None],
    samples: int,
    greedy: bool = False,
    full_pass_rate: int | None = None,
    seconds: dict[str, float] | None = None,
) -> list[Judgement]:
    """`samples` executor outputs per (problem, reasoning) prompt, judged by `task.verify_batch`.

    full_pass_rate: how many leading samples of each prompt need their full pass rate (code tests run to
    the end); the others only need correct / not (the sandbox stops at the first failing test).
    None: every sample is run in full.
    seconds: if given, the time spent in the executor and in the verifier is added to its
    "executor" / "verify" entries.
    """
    seconds = {} if seconds is None else seconds
    start = time.perf_counter()
    prompts = [task.executor_prompt(p, r) for p, r in zip(problems, reasonings, strict=True)]
    results = executor.generate(prompts, samples, greedy=greedy)
    verify_start = time.perf_counter()
    seconds["executor"] = seconds.get("executor", 0.0) + verify_start - start
    flat = [
        (problem, text, full_pass_rate is not None and j >= full_pass_rate)
        for problem, result in zip(problems, results, strict=True)
        if result.ok
        for j, text in enumerate(result.texts)
    ]
    verdicts = iter(
        task.verify_batch([p for p, _, _ in flat], [t for _, t, _ in flat], early_exit=[e for *_, e in flat])
    )
    seconds["verify"] = seconds.get("verify", 0.0) + time.perf_counter() - verify_start
    return [
        Judgement(r.texts, tuple(next(verdicts) for _ in r.texts) if r.ok else None, r.error) for r in results
    ]


def task_tag(task: Task) -> str:
    """A short hash of the task's fingerprint (its settings)."""
    text = json.dumps(task.fingerprint(), sort_keys=True, default=str)
    return f"{task.name}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass
class BaselineCache:
    """The executor alone, per problem: valid only while the executor is frozen.

    Keys name the executor, the task's settings (its fingerprint: `executor_steps` or the instructions
    change the no-reasoning prompt), the problem and the sampling, so one cache can serve several settings.
    Judgements of a failed call, or with a program the sandbox could not run, are not kept.
    `path`: a JSON file that holds the entries across runs (offline evaluation); None: memory only.
    """

    enabled: bool = True
    path: Path | None = None
    entries: dict[str, Judgement] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)
            if self.path.is_file():
                self.load_state_dict(json.loads(self.path.read_text()))

    @staticmethod
    def key(
        executor: Executor,
        tag: str,
        problem: Problem,
        samples: int,
        greedy: bool,
        full_pass_rate: int | None = 0,
    ) -> str:
        """`tag`: `task_tag(task)`, computed once per batch. `full_pass_rate` (see `judge`) is part of the key
        unless 0, training's setting: a code verdict that stopped at its first failing test has a lower
        pass rate than one that ran every test."""
        full = "" if full_pass_rate == 0 else f"|full={full_pass_rate}"
        return f"{executor.identity}|{tag}|{problem.id}|n={samples}|greedy={greedy}{full}"

    def get(self, key: str) -> Judgement | None:
        found = self.entries.get(key) if self.enabled else None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: str, judgement: Judgement) -> None:
        if self.enabled and judgement.ok and not sandbox_failed(judgement):  # retried next time
            self.entries[key] = judgement

    def save(self) -> None:
        """Write the entries to `path` (atomically: a reader never sees half a file)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.state_dict())
        save_atomically(lambda staging: staging.write_text(text), self.path)

    def state_dict(self) -> dict:
        return {
            "entries": {k: v.to_json() for k, v in self.entries.items()},
            "hits": self.hits,
            "misses": self.misses,
        }

    def load_state_dict(self, state: dict) -> None:
        entries = {}
        for key, value in state.get("entries", {}).items():
            if isinstance(value, list):  # checkpoints before judgements were kept: outcomes only
                verdicts = tuple(Verdict(bool(c), float(c), "correct" if c else "wrong") for c in value)
                value = {"texts": [""] * len(verdicts), "verdicts": [asdict(v) for v in verdicts]}
            entries[key] = Judgement.from_json(value)
        self.entries = entries
        self.hits, self.misses = state.get("hits", self.hits), state.get("misses", self.misses)


def judge_alone(
    executor: Executor,
    task: Task,
    problems: Sequence[Problem],
    cache: BaselineCache,
    samples: int,
    greedy: bool = False,
    seconds: dict[str, float] | None = None,
    full_pass_rate: int | None = 0,
) -> list[Judgement]:
    """The executor without reasoning, per problem: cached judgements, plus one call for the rest.
    full_pass_rate: as in `judge`; 0 (the reward's baseline needs only correct / not) stops each code
    program at its first failing test, None (an evaluation reporting pass rates) runs every test."""
    tag = task_tag(task)
    keys = [cache.key(executor, tag, p, samples, greedy, full_pass_rate) for p in problems]
    found: dict[str, Judgement] = {}
    missing: dict[str, Problem] = {}
    for key, problem in zip(keys, problems, strict=True):
        if key in found or key in missing:
            continue
        cached = cache.get(key)
        if cached is None:
            missing[key] = problem
        else:
            found[key] = cached
    if missing:
        problems_left = list(missing.values())
        fresh = judge(
            executor, task, problems_left, [None] * len(missing), samples, greedy, full_pass_rate, seconds
        )
        for key, judgement in zip(missing, fresh, strict=True):
            cache.put(key, judgement)
            found[key] = judgement
    return [found[key] for key in keys]


@dataclass
class ReasoningRecord:
    """One (problem, reasoning): what the executor made of it, its baseline, and the trace metrics."""

    problem_id: str
    reasoning: str | None
    judgement: Judgement  # the executor's replies with the reasoning and their verdicts
    with_reasoning: float | None  # the executor's success rate with the reasoning (None: no verdict)
    alone: float | None  # its success rate without reasoning
    leakage: float
    trace: dict[str, float] = field(default_factory=dict)
    sandbox_failed: bool = False  # a program of either arm never ran: its rate is None, not a failure
    alone_failed: bool = False  # the executor call without the reasoning failed: `alone` is None

    @property
    def executor_outputs(self) -> tuple[str, ...]:
        return self.judgement.texts

    @property
    def uplift(self) -> float | None:
        if self.with_reasoning is None or self.alone is None:
            return None
        return self.with_reasoning - self.alone


def sandbox_failed(judgement: Judgement | None) -> bool:
    """The sandbox could not run one of the judged programs: the verdicts say nothing about them."""
    return judgement is not None and any(v.status == SANDBOX_ERROR for v in judgement.verdicts or ())


def record(
    task: Task, problem: Problem, reasoning: str, judgement: Judgement, baseline: Judgement | None
) -> ReasoningRecord:
    broken = sandbox_failed(judgement), sandbox_failed(baseline)
    return ReasoningRecord(
        problem_id=problem.id,
        reasoning=reasoning,
        judgement=judgement,
        with_reasoning=None if broken[0] else judgement.accuracy,
        alone=None if baseline is None or broken[1] else baseline.accuracy,
        sandbox_failed=any(broken),
        alone_failed=baseline is not None and not baseline.ok,
        leakage=float(task.detect_leakage(problem, reasoning)),
        trace=task.trace_metrics(problem, reasoning, judgement.texts[0] if judgement.ok else None),
    )


def reasonings_as_read(executor: Executor, task: Task, completions: Sequence[str]) -> list[str]:
    """The reasoning of each planner completion as the executor reads it: the task's extraction, then
    `as_read`. Training scores these texts, and its trace metrics read the same ones (`RewardBatch`)."""
    return as_read(executor, [task.extract_reasoning(c) for c in completions])


def as_read(executor: Executor, reasonings: Sequence[str]) -> list[str]:
    """Each reasoning as it reaches the executor's model (`Executor.visible_text`: control-token spellings
    removed). Whatever judges a reasoning (the executor, the leakage detectors, the RM, the trace metrics)
    reads this text, so that "7<|x|>2" cannot show 72 to the executor and hide it from the detector."""
    return [executor.visible_text(r) for r in reasonings]


def judge_reasonings(
    task: Task,
    executor: Executor,
    problems: Sequence[Problem],
    reasonings: Sequence[str],
    cache: BaselineCache,
    samples: int = 1,
    greedy: bool = True,
    *,
    full_pass_rate: int | None = 0,
    baselines: Sequence[Judgement] | None = None,
    seconds: dict[str, float] | None = None,
) -> list[ReasoningRecord]:
    """Two executor calls: all reasonings, then the (cached) no-reasoning baseline. Each reasoning is
    recorded and judged as the executor reads it (`as_read`).

    full_pass_rate: as in `judge` (0: correct / not is enough; None: every code test runs, for pass rates).
    baselines: the executor-alone judgements, when the caller already has them (offline evaluation judges
    them once for every arm); `cache` is then not read.
    """
    reasonings = as_read(executor, reasonings)
    judged = judge(executor, task, problems, reasonings, samples, greedy, full_pass_rate, seconds)
    if baselines is None:
        baselines = judge_alone(executor, task, problems, cache, samples, greedy, seconds, full_pass_rate)
    return [
        record(task, p, r, j, b) for p, r, j, b in zip(problems, reasonings, judged, baselines, strict=True)
    ]


ALWAYS_SUMMARIZED = ("e2e_acc", "baseline_acc", "uplift", "leakage")


def tally(records: Sequence[ReasoningRecord]) -> dict[str, tuple[float, int]]:
    """Per metric, the sum over the records that have a value and their count: `ALWAYS_SUMMARIZED` always
    (count 0 when no record has one: every executor call failed), trace/* as the records hold them. The
    sums and counts of several batches or ranks add up to one `tally` of all their records.

    e2e_acc, baseline_acc and uplift are over the records judged both with and without the reasoning, so
    all three are over the same problems (uplift = e2e_acc - baseline_acc); the others are counted by
    `failure_counts`. Over each arm's own records, a reasoning that made the executor fail (one too long
    for its context) would leave e2e_acc's denominator while staying in baseline_acc's."""
    totals: dict[str, tuple[float, int]] = dict.fromkeys(ALWAYS_SUMMARIZED, (0.0, 0))

    def add(key: str, value: float) -> None:
        total, count = totals.get(key, (0.0, 0))
        totals[key] = (total + value, count + 1)

    for item in records:
        if item.uplift is not None:  # judged both ways
            add("e2e_acc", item.with_reasoning)
            add("baseline_acc", item.alone)
            add("uplift", item.uplift)
        add("leakage", item.leakage)
        for key, value in item.trace.items():
            add(key, value)
    return totals


def add_tallies(into: dict[str, tuple[float, int]], more: dict[str, tuple[float, int]]) -> None:
    """Add `more`'s (sum, count) pairs to `into`'s, key by key (batches, ranks)."""
    for key, (total, count) in more.items():
        before = into.get(key, (0.0, 0))
        into[key] = (before[0] + total, before[1] + count)


def failure_counts(records: Sequence[ReasoningRecord]) -> dict[str, float]:
    """Why records are left out of e2e_acc / baseline_acc / uplift, each counted on its own (a record can
    have several): `executor_failed`, no executor reply with the reasoning; `baseline_executor_failed`, none
    without it; `sandbox_failed`, a program of either call the sandbox could not start."""
    return {
        "executor_failed": float(sum(not r.judgement.ok for r in records)),
        "baseline_executor_failed": float(sum(r.alone_failed for r in records)),
        "sandbox_failed": float(sum(r.sandbox_failed for r in records)),
    }


def summarize(records: Sequence[ReasoningRecord]) -> dict[str, float]:
    """Means over the records that have a value (`tally`): e2e_acc, baseline_acc, uplift (the records judged
    both ways), leakage, trace/* (a metric no record has is left out), and the failure counts
    (`failure_counts`)."""
    summary = {key: total / count for key, (total, count) in tally(records).items() if count}
    summary.update(failure_counts(records))
    return summary


def pass_at_k(records: Sequence[ReasoningRecord], k: int) -> float:
    """Share of problems with at least one success among their k records (records grouped per problem:
    [p0 x k, p1 x k, ...]). A problem with an unjudged record (no executor reply, or a program the sandbox
    could not start) is left out, as `summarize` leaves the record out of e2e_acc; nan if none is left."""
    passed, judged = pass_counts(records, k)
    return passed / judged if judged else math.nan


def pass_counts(records: Sequence[ReasoningRecord], k: int) -> tuple[int, int]:
    """`pass_at_k`'s numerator and denominator: problems with a success, problems judged."""
    if not records or len(records) % k:
        raise ValueError(f"{len(records)} records do not split into groups of {k}")
    groups = [records[start : start + k] for start in range(0, len(records), k)]
    judged = [group for group in groups if all(r.with_reasoning is not None for r in group)]
    return sum(any(r.with_reasoning > 0 for r in group) for group in judged), len(judged)
