"""Held-out RM evaluation sets (EVALUATION ONLY: never train, tune or select on them; data/README.md).

Each item is a (problem, reasoning) written by some model, labeled correct or flawed:
- ProcessBench (gsm8k, math): `steps` joined one per line; correct when `label == -1` (no erroneous step).
- BIG-Bench Mistake (multistep_arithmetic): `steps` joined one per line; correct when `mistake_index` is
  null (no logical mistake; a few such traces still reach a wrong final answer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from planlift.datasets.files import data_dir, read_json, read_jsonl
from planlift.errors import ConfigError, DataError
from planlift.rm_groups.schema import stable_fraction


@dataclass(frozen=True)
class HeldoutItem:
    id: str
    problem: str
    reasoning: str
    correct: bool


def _steps(record: dict, where: str) -> str:
    steps = record.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{where}: field 'steps' must be a list of strings")
    return "\n".join(step.strip() for step in steps)


def load_processbench(subset: str, path: str | Path | None = None) -> list[HeldoutItem]:
    path = Path(path) if path is not None else data_dir() / "processbench" / f"{subset}.json"
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records")
    items = []
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        if not isinstance(record, dict) or not isinstance(record.get("problem"), str):
            raise DataError(f"{where}: missing or non-string field 'problem'")
        label = record.get("label")
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{where}: field 'label' must be an integer (-1 = no error)")
        items.append(
            HeldoutItem(str(record.get("id", index)), record["problem"], _steps(record, where), label == -1)
        )
    return items


def load_bigbench_mistake(
    task: str = "multistep_arithmetic", path: str | Path | None = None
) -> list[HeldoutItem]:
    path = Path(path) if path is not None else data_dir() / "bigbench_mistake" / f"{task}.jsonl"
    items = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        if not isinstance(record.get("input"), str):
            raise DataError(f"{where}: missing or non-string field 'input'")
        if "mistake_index" not in record:
            raise DataError(f"{where}: missing field 'mistake_index'")
        items.append(
            HeldoutItem(
                f"{task}-{line}", record["input"], _steps(record, where), record["mistake_index"] is None
            )
        )
    return items


HELDOUT_SETS: dict[str, Callable[[], list[HeldoutItem]]] = {
    "processbench_gsm8k": lambda: load_processbench("gsm8k"),
    "processbench_math": lambda: load_processbench("math"),
    "bbm_multistep_arithmetic": lambda: load_bigbench_mistake("multistep_arithmetic"),
}


def load_heldout(name: str, limit: int | None = None) -> list[HeldoutItem]:
    """A held-out set; with `limit`, a fixed subsample of that many items (the files are sorted by label,
    so the first N would hold one class only): the items whose hashed ids come first, in file order."""
    if name not in HELDOUT_SETS:
        raise ConfigError(f"unknown held-out set {name!r}; known: {sorted(HELDOUT_SETS)}")
    items = HELDOUT_SETS[name]()
    if limit is None or limit >= len(items):
        return items
    chosen = set(
        sorted(range(len(items)), key=lambda i: stable_fraction("heldout", name, items[i].id))[:limit]
    )
    return [item for i, item in enumerate(items) if i in chosen]
