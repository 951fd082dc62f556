import gzip
import json

import pytest

from planlift.datasets import load_gsm8k, read_json, read_jsonl, strip_calculator_annotations
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


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid UTF-8"):
        list(read_jsonl(path))
    path = tmp_path / "bad.json"
    path.write_bytes(b'{\n"a": "\xff"\n}\n')
    with pytest.raises(DataError, match=r"bad\.json:2: invalid UTF-8"):
        read_json(path)


def test_broken_gzip_files_are_data_errors(tmp_path):
    data = gzip.compress("".join(json.dumps({"a": i, "pad": "x" * 50}) + "\n" for i in range(200)).encode())
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated\.jsonl\.gz:\d+: the gzip data ends early"):
        list(read_jsonl(truncated))
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text('{"a": 1}\n')
    with pytest.raises(DataError, match=r"plain\.jsonl\.gz:1: not a valid gzip file"):
        list(read_jsonl(plain))
    with pytest.raises(DataError, match=r"plain\.jsonl\.gz: not a valid gzip file"):
        read_json(plain)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], r"gsm\.jsonl: no problems"),
        (["\n", "  \n"], r"gsm\.jsonl: no problems"),
        (
            [{"question": "q", "answer": "a #### NaN"}],
            r"gsm\.jsonl:1: final answer .* finite number, got 'NaN'",
        ),
        (
            [{"question": "q", "answer": "a #### inf"}],
            r"gsm\.jsonl:1: final answer .* finite number, got 'inf'",
        ),
        (
            [{"question": "q", "answer": "a #### 3"}, {"question": " ", "answer": "a #### 3"}],
            r"gsm\.jsonl:2: field 'question' is empty",
        ),
    ],
)
def test_gsm8k_empty_files_and_bad_records_are_data_errors(tmp_path, lines, message):
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataError, match=message):
        load_gsm8k("test", path)
