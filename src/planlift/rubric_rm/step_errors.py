"""Locating the earliest erroneous step, as ProcessBench scores a critic.

A trace is a list of steps with its first erroneous step's index, or None when every step is right. The RM
scores every prefix of the trace (steps 0..k); it names as the first error the first prefix whose score
falls below a threshold, and "no error" when none does. ProcessBench's metric then is:

- error_acc: on flawed traces, the share whose first error is named exactly;
- correct_acc: on correct traces, the share named error-free;
- f1: their harmonic mean.

The threshold is chosen on dev groups (their positive is a correct trace; a negative's first error is its
first line that differs from the positive's, for the kinds where that line is wrong), never on a held-out
set, and then applied to the held-out sets as it is. The dev metrics at it are measured on the traces it
was chosen on: optimistic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planlift.rm.learned import LearnedRM, RMInput


@dataclass(frozen=True)
class StepTrace:
    problem: str
    steps: tuple[str, ...]
    first_error: int | None  # index into steps; None = no erroneous step


# Negative kinds whose first line departing from the positive is not itself wrong (GSM8K's): the inserted
# line of irrelevant_detour is a true, unused computation; after dropped_step's gap the next line is right
# in itself. ProcessBench would not name that line; these traces are left out of the dev traces (counted).
UNLOCATED_KINDS = ("irrelevant_detour", "dropped_step")


def dev_traces(groups: Sequence[dict]) -> tuple[list[StepTrace], dict[str, int]]:
    """Step traces from dev groups: each positive (correct) and each negative whose lines depart from the
    positive's within the negative, that line its first error. Left out, and counted by reason (the second
    value): a negative that is only a shortened positive (no wrong line of its own) and the kinds of
    `UNLOCATED_KINDS`."""
    traces, left_out = [], Counter()
    for group in groups:
        positive = _lines(group["positive_pool"][0]["reasoning"])
        traces.append(StepTrace(group["problem"], positive, None))
        for negative in group["negative_bank"]:
            if negative.get("negative_kind") in UNLOCATED_KINDS:
                left_out[negative["negative_kind"]] += 1
                continue
            lines = _lines(negative["reasoning"])
            departs = next((i for i, (a, b) in enumerate(zip(lines, positive, strict=False)) if a != b), None)
            if departs is None:
                departs = min(len(lines), len(positive))
            if departs >= len(lines):
                left_out["shortened"] += 1
                continue
            traces.append(StepTrace(group["problem"], lines, departs))
    return traces, dict(left_out)


def _lines(reasoning: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in reasoning.splitlines() if line.strip())


def prefix_scores(
    scorer: LearnedRM, traces: Sequence[StepTrace], task_name: str = "math"
) -> list[np.ndarray]:
    """The RM's score of every prefix of every trace (one scoring pass over all prefixes)."""
    inputs = [
        RMInput(trace.problem, "\n".join(trace.steps[: k + 1]), task_name, "math")
        for trace in traces
        for k in range(len(trace.steps))
    ]
    flat = scorer.score_inputs(inputs)
    failed = sum(score is None or not np.isfinite(score) for score in flat)
    if failed:
        raise RuntimeError(f"{failed} of {len(flat)} step prefixes could not be scored or scored NaN/inf")
    out, start = [], 0
    for trace in traces:
        out.append(np.asarray(flat[start : start + len(trace.steps)], dtype=np.float64))
        start += len(trace.steps)
    return out


def _hits(
    scores: Sequence[np.ndarray], first_errors: Sequence[int | None], thresholds: np.ndarray
) -> np.ndarray:
    """[traces, thresholds]: is the trace's first error (or its having none) named at each threshold? The
    named error is the first prefix scoring below the threshold, so a flawed trace with first error e is
    named exactly when score[e] < t <= min(score[:e]); a correct one when t <= min(score)."""
    rows = []
    for trace_scores, error in zip(scores, first_errors, strict=True):
        if error is None:
            rows.append(thresholds <= trace_scores.min())
        else:
            before = trace_scores[:error].min() if error else np.inf
            rows.append((trace_scores[error] < thresholds) & (thresholds <= before))
    return np.array(rows)


def step_metrics(
    scores: Sequence[np.ndarray], first_errors: Sequence[int | None], threshold: float
) -> dict[str, float]:
    """error_acc, correct_acc and their harmonic mean f1 at `threshold` (module docstring)."""
    if not any(e is None for e in first_errors) or all(e is None for e in first_errors):
        raise ValueError("the first-error metric needs both correct and flawed traces")
    hits = _hits(scores, first_errors, np.array([threshold]))[:, 0]
    flawed = np.array([e is not None for e in first_errors])
    error_acc, correct_acc = float(hits[flawed].mean()), float(hits[~flawed].mean())
    f1 = 2 * error_acc * correct_acc / (error_acc + correct_acc) if error_acc + correct_acc else 0.0
    return {"error_acc": error_acc, "correct_acc": correct_acc, "f1": f1}


def choose_threshold(scores: Sequence[np.ndarray], first_errors: Sequence[int | None]) -> float:
    """The threshold with the best f1 on these traces (dev traces only): every midpoint between two
    distinct prefix scores, and one beyond each end; the middle of the best run on a tie."""
    values = np.unique(np.concatenate(list(scores)))
    candidates = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2, [values[-1] + 1.0]])
    hits = _hits(scores, first_errors, candidates)
    flawed = np.array([e is not None for e in first_errors])
    error_acc, correct_acc = hits[flawed].mean(axis=0), hits[~flawed].mean(axis=0)
    total = error_acc + correct_acc
    f1 = np.divide(2 * error_acc * correct_acc, total, out=np.zeros_like(total), where=total > 0)
    best = np.flatnonzero(f1 == f1.max())
    return float(candidates[best[len(best) // 2]])
