"""Held-out evaluation sets stay held out: no RM group (train or dev) may hold one of their problems,
and their loaders refuse labels that name no step."""

from __future__ import annotations

import json

import pytest

from planlift.datasets import load_gsm8k
from planlift.datasets.gsm8k import gsm8k_file
from planlift.errors import DataError
from planlift.models import build_char_tokenizer
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm_groups import GSM8KGroupSource, ProceduralGroupSource, build_groups
from planlift.rubric_rm.data import GroupsDataModule
from planlift.rubric_rm.heldout import load_bigbench_mistake, load_heldout, load_processbench, problem_key
from planlift.tasks import ProceduralTask


def test_groups_built_from_gsm8k_test_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"held-out evaluation problems.*\(gsm8k test\)"):
        build_groups(GSM8KGroupSource(path=str(gsm8k_file("test")), limit=20), tmp_path)
    assert not (tmp_path / "train.jsonl").exists()  # nothing written


def test_groups_holding_a_processbench_problem_are_refused_at_training(tmp_path, caplog):
    task = ProceduralTask(sizes={"train": 4, "validation": 3, "test": 0})
    build_groups(ProceduralGroupSource(task, sizes={"train": 4, "dev": 3}), tmp_path)
    data = GroupsDataModule(
        str(tmp_path / "train.jsonl"),
        str(tmp_path / "dev.jsonl"),
        build_char_tokenizer(),
        list(MATH_DIMENSIONS),
        num_negatives=50,
    )
    with caplog.at_level("WARNING", logger="planlift.rubric_rm.data"):
        data.setup("fit")  # procedural problems are not held out
    assert "train.jsonl: 4 of 4 groups hold fewer than rm_data.num_negatives=50 negatives" in caplog.text
    lines = (tmp_path / "dev.jsonl").read_text().splitlines()
    group = json.loads(lines[1])
    problem = load_heldout("processbench_math")[7].problem
    group["problem"] = "  " + problem.replace(" ", "\n").upper() + " "  # reformatted: still the same problem
    (tmp_path / "dev.jsonl").write_text("\n".join([lines[0], json.dumps(group), *lines[2:]]) + "\n")
    fresh = GroupsDataModule(
        str(tmp_path / "train.jsonl"),
        str(tmp_path / "dev.jsonl"),
        build_char_tokenizer(),
        list(MATH_DIMENSIONS),
    )
    with pytest.raises(DataError, match=rf"dev.jsonl: 1 problem\(s\) are held-out .*{group['problem_id']} "):
        fresh.setup("fit")


def test_processbench_gsm8k_problems_are_gsm8k_test_questions():
    """Why the guard holds GSM8K's test split: ProcessBench-gsm8k's problems come from it."""
    test = {problem_key(record.question) for record in load_gsm8k("test")}
    items = load_processbench("gsm8k")
    assert all(problem_key(item.problem) in test for item in items)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"label": 2}, r"record 0: field 'label' = 2 names no step of 2"),
        ({"label": -2}, r"record 0: field 'label' = -2 names no step of 2"),
        ({"label": "1"}, r"record 0: field 'label' must be an integer"),
        ({"label": -1, "steps": []}, r"record 0: field 'steps' is empty"),
    ],
)
def test_processbench_labels_must_name_a_step(tmp_path, record, message):
    path = tmp_path / "pb.json"
    path.write_text(json.dumps([{"problem": "p", "steps": ["a", "b"], **record}]))
    with pytest.raises(DataError, match=message):
        load_processbench("gsm8k", path)
    path.write_text(json.dumps([{"problem": "p", "steps": ["a", "b"], "label": 1}]))
    assert [item.correct for item in load_processbench("gsm8k", path)] == [False]


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("0", r":1: field 'mistake_index' must be an integer or null"),
        (7, r":1: field 'mistake_index' = 7 names no step of 2"),
        (-1, r":1: field 'mistake_index' = -1 names no step of 2"),
    ],
)
def test_bigbench_mistake_index_must_name_a_step(tmp_path, mistake, message):
    path = tmp_path / "bbm.jsonl"
    path.write_text(json.dumps({"input": "q", "steps": ["a", "b"], "mistake_index": mistake}) + "\n")
    with pytest.raises(DataError, match=message):
        load_bigbench_mistake(path=path)
    path.write_text(json.dumps({"input": "q", "steps": ["a", "b"], "mistake_index": None}) + "\n")
    assert [item.correct for item in load_bigbench_mistake(path=path)] == [True]


def test_eval_rm_refuses_dev_groups_holding_a_heldout_problem(tmp_path, tiny_rm_dir, caplog):
    """The dev groups choose the first-error threshold: a dev file with a ProcessBench problem is refused at
    evaluation too, not only at training. Dev groups of one class only choose no threshold (a warning)."""
    from planlift.rubric_rm.evaluation import RMEvaluation

    task = ProceduralTask(sizes={"train": 2, "validation": 3, "test": 0})
    build_groups(ProceduralGroupSource(task, sizes={"train": 2, "dev": 3}), tmp_path)
    lines = (tmp_path / "dev.jsonl").read_text().splitlines()
    group = json.loads(lines[0])
    group["problem"] = load_heldout("processbench_gsm8k")[3].problem
    (tmp_path / "leaky.jsonl").write_text("\n".join([json.dumps(group), *lines[1:]]) + "\n")
    evaluation = RMEvaluation(
        str(tiny_rm_dir), dev_groups=str(tmp_path / "leaky.jsonl"), heldout=[], device="cpu"
    )
    with pytest.raises(DataError, match=r"leaky.jsonl: 1 problem\(s\) are held-out .*\(processbench_gsm8k\)"):
        evaluation.run()
    correct_only = [json.loads(line) for line in lines]
    for record in correct_only:
        record["negative_bank"] = [
            n for n in record["negative_bank"] if n["negative_kind"] == "hallucinated_step"
        ]
        for negative in record["negative_bank"]:  # an extra step that is removed again: the positive itself
            negative["reasoning"] = record["positive_pool"][0]["reasoning"] + "\n"
    (tmp_path / "one_class.jsonl").write_text("".join(json.dumps(r) + "\n" for r in correct_only))
    evaluation = RMEvaluation(
        str(tiny_rm_dir),
        dev_groups=str(tmp_path / "one_class.jsonl"),
        heldout=[],
        device="cpu",
        num_negatives=1,
    )
    with caplog.at_level("WARNING", logger="planlift.rubric_rm.evaluation"):
        dev = evaluation.run()["dev"]
    assert "first-error threshold not chosen" in caplog.text and "first_error/threshold" not in dev
    assert dev["first_error/left_out/shortened"] == 3 and dev["first_error/traces"] == 3
