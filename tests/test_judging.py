"""planlift.judging: one executor call and one verifier call per batch, regrouped per prompt; the
baseline cache in memory, in checkpoints and on disk; pass@k."""

import json
import math

import pytest

from planlift.judging import (
    BaselineCache,
    Judgement,
    ReasoningRecord,
    failure_counts,
    judge,
    judge_alone,
    judge_reasonings,
    pass_at_k,
    pass_counts,
    reasonings_as_read,
    record,
    summarize,
    tally,
)
from planlift.tasks import ProceduralTask
from planlift.tasks.base import SANDBOX_ERROR, Verdict
from tests.rewards.scripted import ScriptedExecutor


@pytest.fixture(scope="module")
def task():
    return ProceduralTask(sizes={"train": 20, "validation": 5, "test": 5})


def test_judge_regroups_outputs_and_verdicts_per_prompt(task):
    problems = task.problems("train")[:2]
    executor = ScriptedExecutor(task, {"A\n": [problems[0].answer, "x"], "B\n": ["x"], None: ["x"]})
    seconds = {}
    judged = judge(executor, task, problems, ["A\n", "B\n"], 3, seconds=seconds)
    assert executor.calls == [(2, 3)]
    assert judged[0].successes == (True, False, True) and judged[0].accuracy == pytest.approx(2 / 3)
    assert judged[1].successes == (False, False, False) and judged[1].accuracy == 0.0
    assert set(seconds) == {"executor", "verify"}


def test_judge_reasonings_reads_each_reasoning_as_the_executor_does(task):
    """Recorded, leak-checked and judged: the text without its control-token spelling; the baseline comes
    from the cache, or from the caller when it has judged it already (no second executor call)."""
    problems = task.problems("train")[:2]
    answer = problems[0].answer
    executor = ScriptedExecutor(task, {f"answer={answer}\n": [answer], "B\n": ["x"], None: ["x"]})
    completions = [f"ans<|x|>wer={answer}\n</reasoning>", "B\n</reasoning>"]
    reasonings = reasonings_as_read(executor, task, completions)
    assert reasonings == [f"answer={answer}\n", "B\n"]
    records = judge_reasonings(task, executor, problems, [f"ans<|x|>wer={answer}\n", "B\n"], BaselineCache())
    assert [r.reasoning for r in records] == reasonings
    assert [(r.with_reasoning, r.alone, r.leakage) for r in records] == [(1.0, 0.0, 1.0), (0.0, 0.0, 0.0)]
    assert executor.calls == [(2, 1), (2, 1)]
    given = [Judgement(("x",), (Verdict(True, 1.0, "correct"),))] * 2
    again = judge_reasonings(task, executor, problems, reasonings, BaselineCache(), baselines=given)
    assert executor.calls == [(2, 1), (2, 1), (2, 1)] and [r.alone for r in again] == [1.0, 1.0]
    assert again[0].executor_outputs == (answer,) and again[0].judgement.successes == (True,)


def test_a_failed_executor_call_has_no_verdicts_and_is_not_cached(task):
    problems = task.problems("train")[:1]
    executor = ScriptedExecutor(task, {None: ["x"]}, fail={None})
    cache = BaselineCache()
    (judgement,) = judge_alone(executor, task, problems, cache, 2)
    assert not judgement.ok and judgement.accuracy is None and judgement.error
    assert cache.entries == {}


def test_baseline_cache_hits_and_survives_a_checkpoint_and_a_file(task, tmp_path):
    problems = task.problems("train")[:3]
    executor = ScriptedExecutor(task, {None: [problems[0].answer, "x"]})
    cache = BaselineCache(path=tmp_path / "alone.json")
    first = judge_alone(executor, task, [*problems, problems[0]], cache, 2)
    assert executor.calls == [(3, 2)] and cache.misses == 3 and cache.hits == 0
    assert first[0] is first[3]  # a problem twice in one batch is judged once
    again = judge_alone(executor, task, problems, cache, 2)
    assert executor.calls == [(3, 2)] and cache.hits == 3 and again == first[:3]

    restored = BaselineCache()
    restored.load_state_dict(json.loads(json.dumps(cache.state_dict())))
    assert restored.entries == cache.entries
    cache.save()
    assert BaselineCache(path=tmp_path / "alone.json").entries == cache.entries
    assert not (tmp_path / "alone.json.tmp").exists()


def test_a_baseline_of_other_task_settings_is_not_reused(task):
    """executor_steps (or an instruction) changes the no-reasoning prompt of the same problem."""
    shared = ProceduralTask(sizes={"train": 20, "validation": 5, "test": 5}, executor_steps=1)
    problem = task.problems("train")[0]
    assert shared.problems("train")[0].id == problem.id
    assert task.executor_prompt(problem, None) != shared.executor_prompt(problem, None)
    executor = ScriptedExecutor(task, {None: ["x"]})
    cache = BaselineCache()
    judge_alone(executor, task, [problem], cache, 2)
    judge_alone(executor, shared, [problem], cache, 2)
    assert executor.calls == [(1, 2), (1, 2)] and cache.hits == 0 and len(cache.entries) == 2


def test_a_baseline_whose_programs_never_ran_is_not_cached():
    cache = BaselineCache()
    broken = Judgement(("", ""), (Verdict(False, 0.0, "sandbox_error"), Verdict(False, 0.0, "failed_tests")))
    cache.put("k", broken)
    assert cache.entries == {}
    cache.put("k", Judgement(("",), (Verdict(False, 0.0, "failed_tests"),)))
    assert list(cache.entries) == ["k"]


def test_checkpoints_of_outcomes_only_still_load():
    cache = BaselineCache()
    cache.load_state_dict({"entries": {"k": [True, False]}})
    assert cache.entries["k"].successes == (True, False) and cache.entries["k"].accuracy == 0.5


def test_judgement_round_trips_through_json():
    judgement = Judgement(("a", "b"), (Verdict(True, 1.0, "correct", "3"), Verdict(False, 0.0, "wrong")))
    assert Judgement.from_json(json.loads(json.dumps(judgement.to_json()))) == judgement


def test_pass_at_k_counts_problems_with_any_success():
    """A problem with an unjudged record is left out, as summarize leaves the record out of e2e_acc."""

    def record(e2e):
        return ReasoningRecord("p", "r", Judgement(("x",), None), e2e, 0.0, 0.0)

    records = [record(0.0), record(1.0), record(0.0), record(0.0), record(None), record(0.0)]
    assert pass_at_k(records, 2) == pytest.approx(1 / 2)  # [0, 1] [0, 0]; [failed, 0] left out
    assert pass_at_k(records, 3) == pytest.approx(1.0)  # [0, 1, 0]; [0, failed, 0] left out
    assert math.isnan(pass_at_k([record(None), record(1.0)], 2))
    with pytest.raises(ValueError, match="groups of 4"):
        pass_at_k(records, 4)


def test_programs_that_never_ran_are_counted_apart_not_scored_wrong(task):
    problem = task.problems("train")[0]
    ran = Judgement(("a",), (Verdict(True, 1.0, "correct"),))
    broken = Judgement(("b",), (Verdict(False, 0.0, "sandbox_error"),))
    failed_call = Judgement((), None, error="timeout")
    records = [
        record(task, problem, "r", ran, ran),
        record(task, problem, "r", broken, ran),
        record(task, problem, "r", ran, broken),
        record(task, problem, "r", failed_call, ran),
    ]
    assert [r.sandbox_failed for r in records] == [False, True, True, False]
    summary = summarize(records)
    assert summary["sandbox_failed"] == 2 and summary["executor_failed"] == 1
    assert (
        summary["e2e_acc"] == 1.0
    )  # the two that ran; neither the broken program nor the failed call counts
    assert summary["baseline_acc"] == 1.0 and summary["uplift"] == 0.0


def test_tallies_of_parts_add_up_to_the_summary_of_the_whole(task):
    """What the GRPO module's validation sums over batches and ranks: (sum, count) per metric, so a part
    whose first record lacks a metric (a failed executor call) still adds up to the whole's mean."""
    problem = task.problems("train")[0]
    right = Judgement((problem.answer,), (Verdict(True, 1.0, "correct"),))
    wrong = Judgement(("x",), (Verdict(False, 0.0, "wrong"),))
    failed_call = Judgement((), None, error="timeout")
    records = [
        record(task, problem, "r", failed_call, wrong),
        record(task, problem, "r", right, wrong),
        record(task, problem, "r", wrong, right),
        record(task, problem, "r", right, right),
        record(task, problem, "r", right, wrong),
    ]
    parts = [tally(records[:1]), tally(records[1:3]), tally(records[3:])]
    assert parts[0]["e2e_acc"] == (0.0, 0) and parts[0]["uplift"] == (0.0, 0)  # present, counting nothing
    assert "trace/right_wrong_reasons" not in parts[0] and "trace/right_wrong_reasons" in parts[1]
    added = {}
    for part in parts:
        for key, (total, count) in part.items():
            added[key] = (added.get(key, (0.0, 0))[0] + total, added.get(key, (0.0, 0))[1] + count)
    summary = summarize(records)
    assert {key for key, (_, count) in added.items() if count} | set(failure_counts(records)) == set(summary)
    for key, (total, count) in added.items():
        assert total / count == pytest.approx(summary[key]), key
    assert summary["e2e_acc"] == pytest.approx(3 / 4) and summary["uplift"] == pytest.approx(1 / 4)
    assert failure_counts(records) == {
        "executor_failed": 1.0,
        "baseline_executor_failed": 0.0,
        "sandbox_failed": 0.0,
    }
    assert "e2e_acc" not in summarize(records[:1])  # a summary leaves out what no record has


def test_pass_counts_are_pass_at_ks_numerator_and_denominator():
    def record(e2e):
        return ReasoningRecord("p", "r", Judgement(("x",), None), e2e, 0.0, 0.0)

    records = [record(0.0), record(1.0), record(0.0), record(0.0), record(None), record(0.0)]
    assert pass_counts(records, 2) == (1, 2)
    assert pass_counts([record(None), record(1.0)], 2) == (0, 0)


def test_accuracies_and_uplift_are_over_the_records_judged_both_ways(task):
    """A failed call on either side leaves the record out of e2e_acc, baseline_acc and uplift alike (so
    uplift = e2e_acc - baseline_acc), and each failure is counted on its own, a record with two twice."""
    problem = task.problems("train")[0]
    right = Judgement((problem.answer,), (Verdict(True, 1.0, "correct"),))
    wrong = Judgement(("x",), (Verdict(False, 0.0, "wrong"),))
    failed_call = Judgement((), None, error="timeout")
    unrun = Judgement(("prog",), (Verdict(False, 0.0, SANDBOX_ERROR),))
    records = [
        record(task, problem, "r", right, failed_call),  # the baseline call failed
        record(task, problem, "r", failed_call, unrun),  # no reply, and the baseline never ran
        record(task, problem, "r", right, wrong),
        record(task, problem, "r", wrong, wrong),
    ]
    summary = summarize(records)
    assert (summary["e2e_acc"], summary["baseline_acc"], summary["uplift"]) == (0.5, 0.0, 0.5)
    assert failure_counts(records) == {
        "executor_failed": 1.0,
        "baseline_executor_failed": 1.0,
        "sandbox_failed": 1.0,
    }
