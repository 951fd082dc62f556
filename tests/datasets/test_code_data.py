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
