"""TraceLift-Groups records (the reasoning RM's data): reading with file:line errors, writing, splitting.

One JSON object per line (the authors' schema)::

    {"problem_id": str, "source": str, "task_type": "math" | "code", "problem": str,
     "reference_solution": str,
     "positive_pool": [{"reasoning": str, "rubric": {<5 dimensions>: int 0..4, "total": float 0..1}}],
     "negative_bank": [{"reasoning": str, "negative_kind": str, "rubric": {...}}],
     "metadata": {...}}

Optional `tests` (code tasks) is rendered into the RM input between the problem and the reasoning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from planlift.datasets.files import read_jsonl, require
from planlift.errors import DataError
from planlift.rubric_rm.rubric import NUM_LABELS, TOTAL
from planlift.tasks.base import TASK_TYPES

Group = dict[str, Any]
REQUIRED_TEXT_FIELDS = ("problem_id", "source", "task_type", "problem", "reference_solution")


def _check_rubric(rubric: Any, names: Sequence[str], where: str) -> None:
    if not isinstance(rubric, dict):
        raise DataError(f"{where}: rubric must be an object, got {type(rubric).__name__}")
    for name in names:
        if name not in rubric:
            raise DataError(f"{where}: rubric is missing dimension {name!r}")
        value = rubric[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise DataError(f"{where}: rubric.{name} must be an integer label, got {value!r}")
        if not 0 <= int(value) < NUM_LABELS:
            raise DataError(f"{where}: rubric.{name}={value} outside 0..{NUM_LABELS - 1}")
    total = rubric.get(TOTAL)
    if isinstance(total, bool) or not isinstance(total, int | float) or not 0.0 <= float(total) <= 1.0:
        raise DataError(f"{where}: rubric.total must be a number in [0, 1], got {total!r}")


def validate_group(record: dict[str, Any], names: Sequence[str], path: Path | str, line: int) -> Group:
    """The record itself after checking every field; DataError names file, line and field."""
    for key in REQUIRED_TEXT_FIELDS:
        require(record, key, path, line)
    if record["task_type"] not in TASK_TYPES:
        raise DataError(
            f"{path}:{line}: task_type must be one of {', '.join(map(repr, TASK_TYPES))}, "
            f"got {record['task_type']!r} (problem_id {record['problem_id']!r})"
        )
    for pool in ("positive_pool", "negative_bank"):
        candidates = require(record, pool, path, line, list)
        if not candidates:
            raise DataError(f"{path}:{line}: {pool} is empty (problem_id {record['problem_id']!r})")
        for index, candidate in enumerate(candidates):
            where = f"{path}:{line}: {pool}[{index}]"
            if not isinstance(candidate, dict):
                raise DataError(f"{where}: expected an object, got {type(candidate).__name__}")
            if not isinstance(candidate.get("reasoning"), str):
                raise DataError(f"{where}: missing or non-string field 'reasoning'")
            _check_rubric(candidate.get("rubric"), names, where)
    if not isinstance(record.get("metadata", {}), dict):
        raise DataError(f"{path}:{line}: field 'metadata' must be an object")
    return record


def read_groups(path: str | Path, names: Sequence[str]) -> list[Group]:
    """All groups of a JSONL file, validated against the rubric dimension `names`."""
    path = Path(path)
    groups = [validate_group(record, names, path, line) for line, record in read_jsonl(path)]
    if not groups:
        raise DataError(f"{path}: no groups")
    return groups


def write_groups(path: str | Path, groups: Iterable[Group]) -> int:
    """One JSON object per line (keys in insertion order, so equal inputs give identical bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for group in groups:
            handle.write(json.dumps(group, ensure_ascii=False) + "\n")
            count += 1
    return count


def stable_fraction(*parts: Any) -> float:
    """A number in [0, 1) determined by `parts` alone (not by Python's per-process hash seed)."""
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:12], 16) / 16**12
