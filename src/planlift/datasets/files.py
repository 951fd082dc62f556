"""JSON / JSONL (optionally gzipped) readers that name the file and line of malformed input."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from planlift.errors import DataError

# a truncated gzip file ends in EOFError, other bytes than gzip in BadGzipFile (an OSError)
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def data_dir() -> Path:
    """`<project root>/data`, or PLANLIFT_DATA."""
    root = Path(os.environ.get("PROJECT_ROOT", Path(__file__).resolve().parents[3]))
    return Path(os.environ.get("PLANLIFT_DATA", root / "data"))


def files_digest(paths: list[Path]) -> str:
    """A content hash of data files (a missing file is a DataError naming it): what cache keys of the data
    read from them hold, so that other files under the same names never share their cached verdicts."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + _existing(path).read_bytes())
    return digest.hexdigest()[:16]


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    return path


def _open_bytes(path: Path):
    _existing(path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _gzip_problem(error: Exception) -> str:
    if isinstance(error, EOFError):
        return f"the gzip data ends early, the file is truncated ({error})"
    return f"not a valid gzip file ({error})"


def _decode(data: bytes, path: Path, line: int | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if line is None:  # a whole file: the line holding the bad byte
            line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}:{line}: invalid UTF-8 ({error.reason} at byte offset {error.start})"
        ) from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded as UTF-8; unreadable bytes raise DataError naming the line."""
    number = 0
    with _open_bytes(path) as handle:
        lines = iter(handle)
        while True:
            try:
                data = next(lines)
            except StopIteration:
                return
            except _GZIP_ERRORS as error:
                raise DataError(f"{path}:{number + 1}: {_gzip_problem(error)}") from None
            number += 1
            yield number, _decode(data, path, number)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-empty line; a malformed line raises DataError naming it."""
    path = Path(path)
    for number, line in _lines(path):
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
    with _open_bytes(path) as handle:
        try:
            data = handle.read()
        except _GZIP_ERRORS as error:
            raise DataError(f"{path}: {_gzip_problem(error)}") from None
    try:
        return json.loads(_decode(data, path, None))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None


def require(record: dict[str, Any], key: str, path: Path | str, line: int, kind: type = str) -> Any:
    """record[key], or a DataError naming file, line and key."""
    if key not in record:
        raise DataError(f"{path}:{line}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):  # True is an int
        raise DataError(f"{path}:{line}: field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value
