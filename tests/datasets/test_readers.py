import gzip
import json

import pytest

from planlift.datasets import load_gsm8k, read_jsonl, strip_calculator_annotations
from planlift.errors import DataError


def test_vendored_gsm8k_loads():
    train, test = load_gsm8k("train"), load_gsm8k("test")
    assert (len(train), len(test)) == (7473, 1319)
    first = train[0]
    assert first.id == "gsm8k-train-1" and first.answer == "72"
    assert "<<" not in first.solution and "####" not in first.solution


def test_calculator_annotations_are_removed():
    assert strip_calculator_annotations("48/2 = <<48/2=24>>24 clips") == "48/2 = 24 clips"


def test_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "a #### 1"}\n{not json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        list(read_jsonl(path))
    path.write_text('{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: GSM8K answer has no '####'"):
        load_gsm8k("train", path)
    path.write_text('{"answer": "x #### 2"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: missing field 'question'"):
        load_gsm8k("train", path)


def test_gzip_jsonl(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps({"a": 1}) + "\n\n" + json.dumps({"a": 2}) + "\n")
    assert [record["a"] for _, record in read_jsonl(path)] == [1, 2]
