"""GSM8K (openai/grade-school-math): question, worked solution, final answer after `####`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from planlift.datasets.files import data_dir, read_jsonl, require
from planlift.errors import DataError

SPLITS = ("train", "test")
_CALCULATOR = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class GSM8KRecord:
    id: str  # "gsm8k-<split>-<line>"
    question: str
    solution: str  # the worked solution without the `####` line and calculator annotations
    answer: str  # the text after `####`, commas removed


def strip_calculator_annotations(text: str) -> str:
    """GSM8K solutions embed calculator calls: "48/2 = <<48/2=24>>24" -> "48/2 = 24"."""
    return _CALCULATOR.sub("", text)


def gsm8k_file(split: str, folder: str | Path | None = None) -> Path:
    """A split's file in `folder` (None = the vendored `data/gsm8k`)."""
    return (Path(folder) if folder is not None else data_dir() / "gsm8k") / f"{split}.jsonl"


def load_gsm8k(split: str, path: str | Path | None = None) -> list[GSM8KRecord]:
    if split not in SPLITS:
        raise DataError(f"unknown GSM8K split {split!r}; known: {list(SPLITS)}")
    path = Path(path) if path is not None else gsm8k_file(split)
    records = []
    for line, raw in read_jsonl(path):
        question = require(raw, "question", path, line)
        if not question.strip():
            raise DataError(f"{path}:{line}: field 'question' is empty")
        full = require(raw, "answer", path, line)
        if "####" not in full:
            raise DataError(f"{path}:{line}: GSM8K answer has no '####' final-answer line")
        solution, _, answer = full.rpartition("####")
        answer = answer.strip().replace(",", "")
        if not answer:
            raise DataError(f"{path}:{line}: empty final answer after '####'")
        if not _is_finite_number(answer):
            raise DataError(
                f"{path}:{line}: final answer after '####' must be a finite number, got {answer!r}"
            )
        records.append(
            GSM8KRecord(
                id=f"gsm8k-{split}-{line}",
                question=question.strip(),
                solution=strip_calculator_annotations(solution).strip(),
                answer=answer,
            )
        )
    if not records:
        raise DataError(f"{path}: no problems (the file has no records)")
    return records


def _is_finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
