"""ProcessBench's first-error metrics (planlift.rubric_rm.step_errors) against a direct reading of their
definition: the named error is the first prefix scoring below the threshold."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from planlift.rubric_rm.step_errors import (
    StepTrace,
    choose_threshold,
    dev_traces,
    prefix_scores,
    step_metrics,
)

ROOT = Path(__file__).resolve().parents[2]


def named(scores, threshold):
    return next((k for k, score in enumerate(scores) if score < threshold), None)


def reference(scores, first_errors, threshold):
    hits = [named(s, threshold) == e for s, e in zip(scores, first_errors, strict=True)]
    flawed = [h for h, e in zip(hits, first_errors, strict=True) if e is not None]
    correct = [h for h, e in zip(hits, first_errors, strict=True) if e is None]
    error_acc, correct_acc = sum(flawed) / len(flawed), sum(correct) / len(correct)
    f1 = 2 * error_acc * correct_acc / (error_acc + correct_acc) if error_acc + correct_acc else 0.0
    return {"error_acc": error_acc, "correct_acc": correct_acc, "f1": f1}


def test_a_worked_example():
    scores = [np.array([0.9, 0.8, 0.7]), np.array([0.9, 0.2, 0.1]), np.array([0.3, 0.2])]
    errors = [None, 1, 0]
    assert step_metrics(scores, errors, 0.5) == {"error_acc": 1.0, "correct_acc": 1.0, "f1": 1.0}
    # at 0.75 the correct trace's last step (0.7) is named an error
    assert step_metrics(scores, errors, 0.75) == {"error_acc": 1.0, "correct_acc": 0.0, "f1": 0.0}
    # at 0.15 the trace wrong at step 1 is named wrong at step 2 (0.1), the one wrong at step 0 error-free
    assert step_metrics(scores, errors, 0.15) == {"error_acc": 0.0, "correct_acc": 1.0, "f1": 0.0}
    assert 0.3 < choose_threshold(scores, errors) <= 0.7
    with pytest.raises(ValueError, match="both correct and flawed"):
        step_metrics(scores[:1], errors[:1], 0.5)


def test_random_traces_match_the_definition():
    rng = random.Random(0)
    for _ in range(200):
        traces = [np.array([round(rng.random(), 1) for _ in range(rng.randint(1, 6))]) for _ in range(12)]
        errors = [None if rng.random() < 0.4 else rng.randrange(len(t)) for t in traces]
        errors[0], errors[1] = None, 0  # both classes
        for threshold in (0.0, 0.25, 0.3, 0.55, 1.1):
            assert step_metrics(traces, errors, threshold) == pytest.approx(
                reference(traces, errors, threshold)
            )
        chosen = choose_threshold(traces, errors)
        best = max(reference(traces, errors, t / 100)["f1"] for t in range(-5, 120))
        assert step_metrics(traces, errors, chosen)["f1"] == pytest.approx(
            best
        )  # no grid threshold does better


def test_dev_traces_mark_the_first_line_that_departs_from_the_positive():
    group = {
        "problem": "p",
        "positive_pool": [{"reasoning": "S3=1+1=2\nS4=2+2=4\nS5=4+4=8\n"}],
        "negative_bank": [
            {"reasoning": "S3=1+1=2\nS4=2+2=5\nS5=5+4=9\n"},  # a slip at step 1
            {"reasoning": "S3=1+1=3\n\nS4=3+2=5\n"},  # at step 0 (blank lines are no steps)
            {"reasoning": "S3=1+1=2\nS4=2+2=4\n"},  # the positive cut short: no wrong line of its own
            {"reasoning": "S3=1+1=2\nS4=2+2=4\nS5=4+4=8\nanswer=9\n"},  # an extra wrong line at step 3
            # GSM8K kinds whose departing line is right in itself: no located error, left out
            {
                "reasoning": "S3=1+1=2\nNote that 2 * 3 = 6.\nS4=2+2=4\nS5=4+4=8\n",
                "negative_kind": "irrelevant_detour",
            },
            {"reasoning": "S3=1+1=2\nS5=4+4=8\n", "negative_kind": "dropped_step"},
        ],
    }
    traces, left_out = dev_traces([group])
    assert [(len(t.steps), t.first_error) for t in traces] == [(3, None), (3, 1), (2, 0), (4, 3)]
    assert left_out == {"shortened": 1, "irrelevant_detour": 1, "dropped_step": 1}


def test_the_dev_traces_of_real_groups_name_a_wrong_line():
    """On GSM8K groups as build_groups writes them, every located first error is a line the positive does
    not hold (a departure of its own), and the kinds whose departing line is true are left out."""
    from planlift.rm_groups.gsm8k import GSM8KPerturber

    rows = [
        json.loads(line) for line in (ROOT / "data" / "gsm8k" / "train.jsonl").read_text().splitlines()[:60]
    ]
    groups = []
    for index, row in enumerate(rows):
        solution, answer = row["answer"].split("####")
        perturber = GSM8KPerturber(row["question"], solution, answer.strip(), random.Random(index))
        negatives = [
            {"reasoning": text, "negative_kind": kind}
            for kind in ("changed_number", "irrelevant_detour", "dropped_step", "unsupported_conclusion")
            if (text := getattr(perturber, kind)()) is not None
        ]
        groups.append(
            {
                "problem": row["question"],
                "positive_pool": [{"reasoning": solution}],
                "negative_bank": negatives,
            }
        )
    traces, left_out = dev_traces(groups)
    assert left_out["irrelevant_detour"] > 0 and left_out["dropped_step"] > 0
    flawed = [t for t in traces if t.first_error is not None]
    assert len(flawed) > 60
    positives = {line for group in groups for line in group["positive_pool"][0]["reasoning"].splitlines()}
    assert all(t.steps[t.first_error] not in {p.strip() for p in positives} for t in flawed)


def test_a_non_finite_prefix_score_is_an_error():
    class Scorer:
        def score_inputs(self, inputs):
            return [0.5, float("nan")][: len(inputs)]

    with pytest.raises(RuntimeError, match="1 of 2 step prefixes could not be scored or scored NaN"):
        prefix_scores(Scorer(), [StepTrace("p", ("a", "b"), None)])
