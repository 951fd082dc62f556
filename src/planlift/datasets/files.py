"""JSON / JSONL (optionally gzipped) readers that name the file and line of malformed input."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from planlift.errors import DataError


def data_dir() -> Path:
    """`<project root>/data`, or PLANLIFT_DATA."""
    root = Path(os.environ.get("PROJECT_ROOT", Path(__file__).resolve().parents[3]))
    return Path(os.environ.get("PLANLIFT_DATA", root / "data"))


def _open(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-empty line; a malformed line raises DataError naming it."""
    path = Path(path)
    with _open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def read_json(path: str | Path) -> Any:
    path = Path(path)
    with _open(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None


def require(record: dict[str, Any], key: str, path: Path | str, line: int, kind: type = str) -> Any:
    """record[key], or a DataError naming file, line and key."""
    if key not in record:
        raise DataError(f"{path}:{line}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind):
        raise DataError(f"{path}:{line}: field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value
