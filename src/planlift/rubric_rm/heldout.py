"""Held-out RM evaluation sets (EVALUATION ONLY: never train, tune or select on them; data/README.md).

Each item is a (problem, reasoning) written by some model, labeled correct or flawed:
- ProcessBench (gsm8k, math): `steps` joined one per line; correct when `label == -1` (no erroneous step).
- BIG-Bench Mistake (multistep_arithmetic): `steps` joined one per line; correct when `mistake_index` is
  null (no logical mistake; a few such traces still reach a wrong final answer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planlift.datasets.files import data_dir, read_json, read_jsonl
from planlift.errors import ConfigError, DataError
from planlift.rm_groups.schema import stable_fraction


@dataclass(frozen=True)
class HeldoutItem:
    id: str
    problem: str
    reasoning: str  # the steps, one per line
    correct: bool
    steps: tuple[str, ...] = ()
    first_error: int | None = None  # the first erroneous step (0-based); None when correct


def _steps(record: dict, where: str) -> list[str]:
    steps = record.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{where}: field 'steps' must be a list of strings")
    if not steps:
        raise DataError(f"{where}: field 'steps' is empty")
    return steps


def _stripped(steps: list[str]) -> tuple[str, ...]:
    return tuple(step.strip() for step in steps)


def _joined(steps: list[str]) -> str:
    return "\n".join(_stripped(steps))


def _step_index(value, steps: list[str], where: str, key: str, meaning: str) -> None:
    """`value` names a step of `steps` (0-based) or, as `meaning` says, none."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise DataError(f"{where}: field {key!r} must be an integer {meaning}, got {value!r}")
    if value is not None and not 0 <= value < len(steps):
        raise DataError(f"{where}: field {key!r} = {value} names no step of {len(steps)}")


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
        steps = _steps(record, where)
        label = record.get("label")
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{where}: field 'label' must be an integer (-1 = no error)")
        _step_index(None if label == -1 else label, steps, where, "label", "(-1 = no error)")
        first_error = None if label == -1 else label
        item_id = str(record.get("id", index))
        items.append(
            HeldoutItem(
                item_id, record["problem"], _joined(steps), label == -1, _stripped(steps), first_error
            )
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
        steps = _steps(record, where)
        mistake = record["mistake_index"]
        _step_index(mistake, steps, where, "mistake_index", "or null (null = no mistake)")
        items.append(
            HeldoutItem(
                f"{task}-{line}", record["input"], _joined(steps), mistake is None, _stripped(steps), mistake
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


def problem_key(text: str) -> str:
    """A problem as compared with the held-out ones: its letters and digits, case-folded (a copy with other
    spacing, line breaks or punctuation is still the same problem)."""
    return "".join(re.findall(r"[^\W_]+", text.casefold()))


@lru_cache(maxsize=1)
def heldout_problems() -> dict[str, str]:
    """`problem_key` -> the held-out set it belongs to: every problem of the held-out RM sets, and GSM8K's
    test questions (ProcessBench-gsm8k's problems are among them)."""
    from planlift.datasets import load_gsm8k

    found = {problem_key(record.question): "gsm8k test" for record in load_gsm8k("test")}
    for name, load in HELDOUT_SETS.items():
        found.update((problem_key(item.problem), name) for item in load())
    return found


def refuse_heldout(problems: Iterable[tuple[str, str]], where: str) -> None:
    """A DataError when any (problem id, problem text) is a held-out evaluation problem: the RM's groups
    (train and dev) must never hold them, or the held-out numbers measure memory."""
    heldout = heldout_problems()
    found = [(pid, heldout[key]) for pid, text in problems if (key := problem_key(text)) in heldout]
    if found:
        shown = ", ".join(f"{pid} ({name})" for pid, name in found[:5])
        raise DataError(
            f"{where}: {len(found)} problem(s) are held-out evaluation problems, which the RM must never "
            f"train or select on: {shown}"
        )
