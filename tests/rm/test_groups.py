"""TraceLift-Groups: localized negatives, rubric rules, the builder's determinism, splits and errors."""

from __future__ import annotations

import json
import random

import pytest

from planlift.errors import DataError
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm_groups import GSM8KGroupSource, ProceduralGroupSource, build_groups, read_groups
from planlift.rm_groups import gsm8k as g8
from planlift.rm_groups.procedural import KINDS as PROCEDURAL_KINDS
from planlift.rm_groups.procedural import procedural_negatives
from planlift.rubric_rm.rubric import MATH_RUBRIC_RULES, RuleLabeler
from planlift.rubric_rm.step_errors import dev_traces
from planlift.tasks import ProceduralTask
from planlift.tasks.procedural_trace import STEP_LINE, analyze_trace

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
SOLUTION = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."


@pytest.fixture(scope="module")
def task():
    return ProceduralTask(length=7, sizes={"train": 40, "validation": 12, "test": 0})


def slips(task, reasoning: str) -> int:
    """Step lines whose stated value is not their operands' result (the task's arithmetic)."""
    count = 0
    for line in reasoning.splitlines():
        step = STEP_LINE.match(line)
        if step and task._apply(float(step.group(2)), step.group(3), float(step.group(4))) != float(
            step.group(5)
        ):
            count += 1
    return count


def test_procedural_negatives_are_localized(task):
    for problem in task.problems("train")[:20]:
        gold = task.gold_reasoning(problem)
        program, states = problem.meta["program"], problem.meta["states"]
        negatives = dict(procedural_negatives(task, problem, random.Random(problem.id)))
        assert set(negatives) <= set(PROCEDURAL_KINDS) and len(negatives) >= 7
        assert gold not in negatives.values() and len(set(negatives.values())) == len(negatives)
        gold_lines = gold.splitlines()
        analyses = {k: analyze_trace(r, program, states) for k, r in negatives.items()}

        slip = negatives["arithmetic_slip"].splitlines()
        assert sum(a != b for a, b in zip(slip, gold_lines, strict=True)) == 1  # one line, one value
        assert analyses["arithmetic_slip"].correct_steps == len(gold_lines) - 1
        assert slips(task, negatives["arithmetic_slip"]) == 1
        # the slipped line is the only wrong arithmetic: later steps compute correctly from the wrong value
        assert (
            analyses["propagated_slip"].step_accuracy < 1 and slips(task, negatives["propagated_slip"]) == 1
        )
        assert analyses["skipped_step"].executed_steps == len(gold_lines) - 1
        assert set(negatives["skipped_step"].splitlines()) < set(gold_lines)
        assert (
            analyses["premature_answer"].premature_answer
            and not analyses["premature_answer"].final_state_correct
        )
        assert (
            analyses["answer_leaked"].leaked_answer
            and negatives["answer_leaked"] == f"answer={problem.answer}\n"
        )
        assert analyses["hallucinated_step"].hallucinated_steps == 1
        assert negatives["hallucinated_step"].startswith(gold)
        assert sorted(negatives["reordered_steps"].splitlines()) == sorted(gold_lines)
        if "wrong_operand" in negatives:
            assert slips(task, negatives["wrong_operand"]) == 0  # right arithmetic on the wrong state
            assert analyses["wrong_operand"].step_accuracy < 1


def _step_indices(reasoning: str) -> list[int]:
    return [int(m.group(1)) for line in reasoning.splitlines() if (m := STEP_LINE.match(line))]


@pytest.mark.parametrize("executor_steps", [0, 1, 3])
def test_procedural_negatives_stay_in_the_planners_steps(executor_steps):
    """With an executor share k the positive stops at S_(N-k); every negative is built over the same
    planner steps and differs from the positive only where its kind says (not by its length alone)."""
    task = ProceduralTask(length=8, executor_steps=executor_steps, sizes={"train": 30, "validation": 2})
    planned, n = task.planned_length, task.length
    for problem in task.problems("train"):
        program, states = problem.meta["program"], problem.meta["states"]
        gold = task.gold_reasoning(problem)
        gold_lines = gold.splitlines()
        negatives = dict(procedural_negatives(task, problem, random.Random(problem.id)))
        assert len(negatives) >= 7
        for kind, reasoning in negatives.items():
            indices = [i for i in _step_indices(reasoning) if i <= n]
            assert all(3 <= i <= planned for i in indices), (kind, reasoning)
            analysis = analyze_trace(reasoning, program, states, leave=executor_steps)
            assert analysis.executor_states_stated == 0, (kind, reasoning)
        lines = {kind: reasoning.splitlines() for kind, reasoning in negatives.items()}

        slip = lines["arithmetic_slip"]
        assert (
            len(slip) == len(gold_lines) and sum(a != b for a, b in zip(slip, gold_lines, strict=True)) == 1
        )
        assert slips(task, negatives["arithmetic_slip"]) == 1
        for kind in ("propagated_slip", "wrong_operand"):
            if kind not in lines:
                continue
            changed = lines[kind]
            first = next(i for i, (a, b) in enumerate(zip(changed, gold_lines, strict=True)) if a != b)
            assert changed[:first] == gold_lines[:first]
            assert slips(task, "\n".join(changed[first:])) == (kind == "propagated_slip")
        skipped = lines["skipped_step"]
        assert len(skipped) == len(gold_lines) - 1 and skipped[-1] == gold_lines[-1]
        assert any(skipped == gold_lines[:i] + gold_lines[i + 1 :] for i in range(len(gold_lines) - 1))
        *prefix, answer = lines["premature_answer"]
        assert 0 < len(prefix) < len(gold_lines) and prefix == gold_lines[: len(prefix)]
        assert answer == f"answer={gold_lines[len(prefix) - 1].rsplit('=', 1)[1]}"
        extra = lines["hallucinated_step"]
        assert extra[:-1] == gold_lines and _step_indices(extra[-1]) == [n + 1]
        assert STEP_LINE.match(extra[-1]).group(2) == gold_lines[-1].rsplit("=", 1)[1]  # reads S_M
        assert negatives["answer_leaked"] == f"answer={problem.answer}\n"
        swapped = lines["reordered_steps"]
        assert (
            sorted(swapped) == sorted(gold_lines)
            and sum(a != b for a, b in zip(swapped, gold_lines, strict=True)) == 2
        )

        # the dev traces' first error is the negative's own first departing line, inside the planner's trace
        group = {
            "problem": problem.text,
            "positive_pool": [{"reasoning": gold}],
            "negative_bank": [{"reasoning": r, "negative_kind": k} for k, r in negatives.items()],
        }
        traces, _ = dev_traces([group])
        for trace in traces[1:]:
            assert trace.first_error <= len(gold_lines)
            assert (
                trace.first_error == len(gold_lines)
                or trace.steps[trace.first_error] != gold_lines[trace.first_error]
            )


def test_gsm8k_equations_are_checked_arithmetic():
    assert [m.group(0) for m in g8.equations(SOLUTION.splitlines()[0])] == ["48/2 = 24"]
    assert g8.equations("She worked 3-4 hours = 7 days") == []  # 3-4 is not 7: prose, not arithmetic
    assert g8.evaluate("$1,200 x 3") == 3600 and g8.evaluate("(5+3)*2") == 16
    assert g8.evaluate("__import__('os')") is None and g8.evaluate("4/0") is None
    assert (
        g8.format_value(0.004) == "0.004" and g8.format_value(72.0) == "72" and g8.format_value(2.5) == "2.5"
    )


def test_gsm8k_negatives_are_localized():
    negatives = dict(g8.gsm8k_negatives(QUESTION, SOLUTION, "72", random.Random(0)))
    assert set(negatives) == set(g8.KINDS)
    lines = SOLUTION.splitlines()
    for kind in ("changed_number", "swapped_operation"):
        changed = negatives[kind].splitlines()
        # every equation is still arithmetic (the error propagates), and the conclusion moved
        assert all(g8.equations(line) for line in changed)
        assert g8.NUMBER.findall(changed[-1])[-1] != "72"
    assert negatives["dropped_step"] in lines
    assert negatives["unsupported_conclusion"].splitlines()[0] == lines[0]
    assert g8.equations(negatives["unsupported_conclusion"].splitlines()[1]) == []  # no longer adds up
    assert negatives["premature_answer"] == f"{lines[0]}\nSo the answer is 24."
    assert negatives["answer_leaked"] == "The answer is 72."
    detour = negatives["irrelevant_detour"].splitlines()
    assert len(detour) == 3 and [line for line in detour if line in lines] == lines


def test_gsm8k_dropped_step_drops_a_line_with_a_number():
    prose = "First, read the question carefully."
    solution = f"{prose}\n{SOLUTION}"
    dropped = set()
    for seed in range(40):
        lines = g8.gsm8k_negatives(QUESTION, solution, "72", random.Random(seed))
        dropped |= set(solution.splitlines()) - set(dict(lines)["dropped_step"].splitlines())
    assert dropped == {SOLUTION.splitlines()[0]}  # never the prose line, never the conclusion
    only_prose = f"{prose}\nSo 72 clips."
    kinds = dict(g8.gsm8k_negatives(QUESTION, only_prose, "72", random.Random(0)))
    assert "dropped_step" not in kinds


def test_rule_labeler_follows_the_table():
    labeler = RuleLabeler()
    for kind, (labels, total) in MATH_RUBRIC_RULES.items():
        rubric = labeler.label(kind)
        assert [rubric[name] for name in MATH_DIMENSIONS] == list(labels) and rubric["total"] == total
    assert all(MATH_RUBRIC_RULES[k][1] < 1.0 for k in (*PROCEDURAL_KINDS, *g8.KINDS))


def test_build_is_deterministic_disjoint_and_valid(tmp_path, task):
    source = ProceduralGroupSource(task, sizes={"train": 40, "dev": 12})
    first = build_groups(source, tmp_path / "a", seed=3)
    build_groups(source, tmp_path / "b", seed=3)
    build_groups(source, tmp_path / "c", seed=4)
    for split in ("train", "dev"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (
            tmp_path / "b" / f"{split}.jsonl"
        ).read_bytes()
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()
    train = read_groups(tmp_path / "a" / "train.jsonl", MATH_DIMENSIONS)
    dev = read_groups(tmp_path / "a" / "dev.jsonl", MATH_DIMENSIONS)
    assert len(train) == 40 and len(dev) == 12 and first["splits"]["train"]["groups"] == 40
    assert not {g["problem_id"] for g in train} & {g["problem_id"] for g in dev}
    group = train[0]
    assert set(group) == {
        "problem_id", "source", "task_type", "problem", "reference_solution", "positive_pool", "negative_bank", "metadata",
    }  # fmt: skip
    assert group["source"] == "procedural" and group["task_type"] == "math"
    assert group["positive_pool"][0]["rubric"]["total"] == 1.0
    for negative in group["negative_bank"]:
        labels, total = MATH_RUBRIC_RULES[negative["negative_kind"]]
        assert [negative["rubric"][n] for n in MATH_DIMENSIONS] == list(labels)
        assert negative["rubric"]["total"] == total
    assert all(len(g["negative_bank"]) >= 4 for g in train)


def test_gsm8k_source_splits_by_problem(tmp_path):
    summary = build_groups(GSM8KGroupSource(limit=80, dev_fraction=0.25), tmp_path, seed=0)
    train = read_groups(tmp_path / "train.jsonl", MATH_DIMENSIONS)
    dev = read_groups(tmp_path / "dev.jsonl", MATH_DIMENSIONS)
    assert (
        len(train)
        + len(dev)
        + sum(s["dropped"].get("too_few_negatives", 0) for s in summary["splits"].values())
        == 80
    )
    assert 5 <= len(dev) <= 35 and not {g["problem"] for g in train} & {g["problem"] for g in dev}
    positive = train[0]["positive_pool"][0]["reasoning"]
    assert "####" not in positive and "<<" not in positive
    assert train[0]["source"] == "gsm8k" and train[0]["reference_solution"] == train[0]["metadata"]["answer"]


def test_gsm8k_answer_without_final_line_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    good = {"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: .*####"):
        build_groups(GSM8KGroupSource(path=str(path)), tmp_path / "out")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: "not json {", r":2: invalid JSON"),
        (
            lambda g: json.dumps({k: v for k, v in g.items() if k != "problem"}),
            r":2: missing field 'problem'",
        ),
        (
            lambda g: json.dumps(
                {**g, "negative_bank": [{**g["negative_bank"][0], "rubric": {"total": 0.5}}]}
            ),
            r":2: negative_bank\[0\]: rubric is missing dimension 'problem_understanding'",
        ),
        (
            lambda g: json.dumps(
                {
                    **g,
                    "positive_pool": [
                        {
                            **g["positive_pool"][0],
                            "rubric": {**g["positive_pool"][0]["rubric"], "step_coherence": 7},
                        }
                    ],
                }
            ),
            r":2: positive_pool\[0\]: rubric.step_coherence=7 outside 0..4",
        ),
        (lambda g: json.dumps({**g, "negative_bank": []}), r":2: negative_bank is empty"),
        (
            lambda g: json.dumps({**g, "task_type": "poetry"}),
            r":2: task_type must be one of 'math', 'code', got 'poetry'",
        ),
    ],
)
def test_malformed_groups_name_file_and_line(tmp_path, task, edit, message):
    build_groups(ProceduralGroupSource(task, sizes={"train": 3, "dev": 1}), tmp_path, seed=0)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    lines[1] = edit(json.loads(lines[1]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{bad}{message}"):
        read_groups(bad, MATH_DIMENSIONS)
