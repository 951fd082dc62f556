"""Vendored code benchmarks: counts, splits, and JSON inputs reshaped to their real Python types."""

from __future__ import annotations

import gzip
import json

import pytest

from planlift.datasets.code import (
    conform,
    conform_args,
    literal_call_args,
    load_humaneval,
    load_mbpp,
    load_mbpp_plus,
)
from planlift.datasets.files import data_dir
from planlift.errors import DataError


def test_humaneval_counts():
    original, plus = load_humaneval(plus=False), load_humaneval(plus=True)
    assert len(original) == len(plus) == 164
    assert all(r.completion_style and r.asserts and r.reference.startswith(r.prompt) for r in plus)
    assert not original[0].inputs and plus[0].base_inputs > 0
    assert sum(len(r.inputs) for r in plus) > 100_000
    assert {r.oracle for r in plus} == {"equal", "poly_root"}


def test_mbpp_splits_are_disjoint_from_mbpp_plus():
    plus = load_mbpp_plus()
    ids = {r.meta["mbpp_id"] for r in plus}
    train, validation = load_mbpp("train", ids), load_mbpp("validation", ids)
    assert (len(plus), len(train), len(validation)) == (378, 266, 51)
    assert not ids & {r.meta["mbpp_id"] for r in train + validation}
    assert all(601 <= r.meta["mbpp_id"] <= 974 for r in train)
    assert all(len(r.asserts) >= 3 and r.entry_point in r.asserts[0] for r in train)


def test_mbpp_plus_inputs_get_their_python_types_back():
    with gzip.open(data_dir() / "mbpp_plus/MbppPlus-v0.2.0.jsonl.gz", "rt") as handle:
        raw = [json.loads(line) for line in handle]
    mismatched = []
    for record, source in zip(load_mbpp_plus(), raw, strict=True):
        for assertion, json_args in zip(record.asserts, source["base_input"], strict=False):
            literal = literal_call_args(assertion, record.entry_point)
            if literal is None:
                continue
            shaped = conform_args(json_args, literal)
            if shaped != literal or [type(a) for a in shaped] != [type(a) for a in literal]:
                mismatched.append(record.id)
                break
    # Mbpp/87's base_input is a different dict than its assertion in the data itself
    assert mismatched == ["Mbpp/87"]


def test_conform_examples():
    assert conform([[1, 2], [3, 4]], ((0, 0),)) == ((1, 2), (3, 4))
    assert conform({"1": "a"}, {1: "b"}) == {1: "a"}
    assert conform("1j", 0j) == 1j and conform("2", 0) == 2
    assert conform([1, [2, [3]]], (1, (2, 3))) == (1, (2, (3,)))  # deeper than the literal
    assert conform([[1], [2]], {(0,)}) == {(1,), (2,)}
    assert conform_args([[1, 2], [3]], [[0], (0,)]) == [[1, 2], (3,)]


def test_empty_plus_input_and_malformed_files(tmp_path):
    records = {r.id: r for r in load_mbpp_plus()}
    assert len(records["Mbpp/793"].inputs) == records["Mbpp/793"].base_inputs == 3
    bad = tmp_path / "humaneval_plus" / "HumanEvalPlus-v0.1.10.jsonl.gz"
    bad.parent.mkdir()
    with gzip.open(bad, "wt") as handle:
        handle.write('{"task_id": "HumanEval/0", "prompt": "x"}\n')
    with pytest.raises(DataError, match=r"HumanEvalPlus-v0.1.10.jsonl.gz:1: missing field 'entry_point'"):
        load_humaneval(plus=True, root=tmp_path)
    with pytest.raises(DataError, match="unknown MBPP split"):
        load_mbpp("dev")


def _vendored_lines(relative: str) -> list[str]:
    path = data_dir() / relative
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [handle.readline() for _ in range(3)]


def _write(root, relative: str, lines) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line if isinstance(line, str) else json.dumps(line) + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")


HUMANEVAL_PLUS = "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP_PLUS = "mbpp_plus/MbppPlus-v0.2.0.jsonl.gz"
MBPP = "mbpp/mbpp.jsonl"


@pytest.mark.parametrize(
    ("relative", "load"),
    [
        (HUMANEVAL_PLUS, lambda root: load_humaneval(plus=True, root=root)),
        (MBPP_PLUS, lambda root: load_mbpp_plus(root=root)),
    ],
)
def test_a_duplicate_task_id_names_both_lines(tmp_path, relative, load):
    first, second, _ = _vendored_lines(relative)
    _write(tmp_path, relative, [first, second, first])
    task_id = json.loads(first)["task_id"]
    with pytest.raises(DataError, match=rf"jsonl.gz:3: duplicate task_id '{task_id}' \(first at line 1\)"):
        load(tmp_path)


def _mbpp_train_record(task_id: int = 701, **changes) -> dict:
    source = json.loads((data_dir() / MBPP).read_text(encoding="utf-8").splitlines()[task_id - 1])
    assert source["task_id"] == task_id
    return {**source, **changes}


def test_mbpp_duplicates_non_string_tests_and_empty_splits_are_data_errors(tmp_path):
    record = _mbpp_train_record()
    _write(tmp_path, MBPP, [record, _mbpp_train_record(702), record])
    with pytest.raises(DataError, match=r"mbpp.jsonl:3: duplicate task_id 701 \(first at line 1\)"):
        load_mbpp("train", root=tmp_path)
    _write(tmp_path, MBPP, [_mbpp_train_record(test_list=[5])])
    with pytest.raises(DataError, match=r"mbpp.jsonl:1: field 'test_list' must hold strings, item 0 is int"):
        load_mbpp("train", root=tmp_path)
    _write(tmp_path, MBPP, [{**_mbpp_train_record(), "task_id": True}])
    with pytest.raises(DataError, match=r"mbpp.jsonl:1: field 'task_id' must be int, got bool"):
        load_mbpp("train", root=tmp_path)
    for lines in ([], ["\n"], [_mbpp_train_record(11)]):  # empty, blank, no problem of the split
        _write(tmp_path, MBPP, lines)
        with pytest.raises(DataError, match=r"mbpp.jsonl: no problems of MBPP split 'train'"):
            load_mbpp("train", root=tmp_path)


@pytest.mark.parametrize("task_id", ["Mbpp-2", "Mbpp/x", "Mbpp/"])
def test_a_malformed_mbpp_plus_task_id_names_the_line(tmp_path, task_id):
    first, *_ = _vendored_lines(MBPP_PLUS)
    _write(tmp_path, MBPP_PLUS, [first, {**json.loads(first), "task_id": task_id}])
    with pytest.raises(
        DataError, match=rf"jsonl.gz:2: field 'task_id' must be 'Mbpp/<number>', got '{task_id}'"
    ):
        load_mbpp_plus(root=tmp_path)


@pytest.mark.parametrize("atol", ["abc", -1, float("inf"), True])
def test_a_bad_atol_names_the_line(tmp_path, atol):
    first, *_ = _vendored_lines(HUMANEVAL_PLUS)
    _write(tmp_path, HUMANEVAL_PLUS, [{**json.loads(first), "atol": atol}])
    with pytest.raises(DataError, match=r"jsonl.gz:1: field 'atol' must be a finite number >= 0"):
        load_humaneval(plus=True, root=tmp_path)


@pytest.mark.parametrize("assertion", ["import math\n", "check(foo)\n", "# assert foo(1) == 2\n"])
def test_an_mbpp_plus_assertion_without_an_assert_names_the_line(tmp_path, assertion):
    """Without an assert, the base tests would silently be none (plus=False: the problem left out)."""
    first, *_ = _vendored_lines(MBPP_PLUS)
    _write(tmp_path, MBPP_PLUS, [first, {**json.loads(first), "task_id": "Mbpp/999", "assertion": assertion}])
    with pytest.raises(DataError, match=r"jsonl.gz:2: assertion holds no assert statement"):
        load_mbpp_plus(root=tmp_path)
