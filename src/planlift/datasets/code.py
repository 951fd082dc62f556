"""HumanEval / HumanEval+ and MBPP / MBPP+ (the vendored files in data/), as code problems with tests.

Tests come in two forms (see `planlift.sandbox.CodeTest`):
- assert snippets: HumanEval's `check(candidate)`, MBPP's `test_list`, MBPP+'s `assertion`;
- call inputs: HumanEval+ / MBPP+ `base_input` + `plus_input`. Their expected outputs are not in the data
  (EvalPlus derives them from the reference solution); `planlift.tasks.code` computes them once in the
  sandbox and caches them.

MBPP+ stores inputs as JSON, which loses tuples, sets, complex numbers and integer dict keys. Each
problem's first base assertion shows the real argument types as a Python literal; `conform` reshapes
every JSON input after it (lists -> tuples / sets where the literal has them, and so on).

Special oracles (facts from EvalPlus, which marks these problems as ambiguous): HumanEval/32
(`find_zero`, any root is right), MBPP+ problems whose answer is a collection in no particular order
(set equality), and MBPP+ regex matchers whose result is a match object or None (truthiness).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planlift.datasets.files import data_dir, read_jsonl, require
from planlift.errors import DataError

HUMANEVAL_FILE = "humaneval/HumanEval.jsonl.gz"
HUMANEVAL_PLUS_FILE = "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP_FILE = "mbpp/mbpp.jsonl"
MBPP_PLUS_FILE = "mbpp_plus/MbppPlus-v0.2.0.jsonl.gz"
# MBPP's own split by task id (data/mbpp/README.md): 1-10 few-shot prompts, 11-510 test,
# 511-600 validation, 601-974 train.
MBPP_SPLIT_IDS = {"train": range(601, 975), "validation": range(511, 601), "test": range(11, 511)}

_SET_EQUAL = {"Mbpp/2", "Mbpp/7", "Mbpp/111", "Mbpp/140", "Mbpp/232", "Mbpp/579", "Mbpp/769"}
_TRUTHY = {"Mbpp/737", "Mbpp/787", "Mbpp/794"}
_POLY_ROOT = {"HumanEval/32"}
_MBPP_PLUS_ID = re.compile(r"Mbpp/(\d+)")


@dataclass(frozen=True)
class CodeRecord:
    """One code problem.

    prompt: what the executor must implement (HumanEval: signature + docstring; MBPP: the description
    and one example assertion, in a docstring). completion_style: the executor continues `prompt`
    (HumanEval), so program = prompt + completion. inputs: argument lists of the call tests, the first
    `base_inputs` from the original tests, the rest EvalPlus's extra inputs.
    """

    id: str
    prompt: str
    entry_point: str
    reference: str
    asserts: tuple[str, ...] = ()
    inputs: tuple[Any, ...] = ()
    base_inputs: int = 0
    atol: float = 0.0
    oracle: str = "equal"
    completion_style: bool = False
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def _path(relative: str, root: str | Path | None) -> Path:
    return Path(root) / relative if root is not None else data_dir() / relative


def load_humaneval(plus: bool = True, root: str | Path | None = None) -> list[CodeRecord]:
    """HumanEval (164 problems, `check` only) or HumanEval+ (`check` plus the base and extra inputs)."""
    path = _path(HUMANEVAL_PLUS_FILE if plus else HUMANEVAL_FILE, root)
    records = []
    seen: dict[str, int] = {}
    for line, raw in read_jsonl(path):
        task_id = _unique_id(require(raw, "task_id", path, line), seen, path, line)
        prompt = require(raw, "prompt", path, line)
        entry = require(raw, "entry_point", path, line)
        check = require(raw, "test", path, line)
        inputs: list[Any] = []
        base = 0
        if plus:
            base_input = require(raw, "base_input", path, line, list)
            inputs = base_input + _plus_inputs(raw, path, line)
            base = len(base_input)
        records.append(
            CodeRecord(
                id=task_id,
                prompt=prompt,
                entry_point=entry,
                reference=prompt + require(raw, "canonical_solution", path, line),
                asserts=(f"{check}\ncheck({entry})\n",),
                inputs=tuple(inputs),
                base_inputs=base,
                atol=_atol(raw, path, line),
                oracle="poly_root" if task_id in _POLY_ROOT else "equal",
                completion_style=True,
            )
        )
    if not records:
        raise DataError(f"{path}: no problems")
    return records


def _unique_id(task_id: Any, seen: dict[Any, int], path: Path, line: int) -> Any:
    """task_id, after checking that no earlier line of the file has it (they would share expected outputs)."""
    if task_id in seen:
        raise DataError(f"{path}:{line}: duplicate task_id {task_id!r} (first at line {seen[task_id]})")
    seen[task_id] = line
    return task_id


def _atol(raw: dict[str, Any], path: Path, line: int) -> float:
    value = raw.get("atol")
    if value is None:
        return 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise DataError(f"{path}:{line}: field 'atol' must be a finite number >= 0, got {value!r}")
    return float(value)


def _plus_inputs(raw: dict[str, Any], path: Path, line: int) -> list[Any]:
    extra = raw.get("plus_input")
    if extra in (None, {}, []):  # MBPP+ writes an empty dict for "no extra inputs"
        return []
    if not isinstance(extra, list):
        raise DataError(f"{path}:{line}: field 'plus_input' must be a list, got {type(extra).__name__}")
    return extra


def _mbpp_prompt(description: str, example: str) -> str:
    return f'"""\n{description.strip()}\n{example.strip()}\n"""\n'


def _split_assertion(source: str, where: str) -> tuple[list[str], str]:
    """MBPP+ `assertion`: (one snippet per assert, the setup lines before them, e.g. imports)."""
    try:
        module = ast.parse(source)
    except SyntaxError as error:
        raise DataError(f"{where}: assertion does not parse ({error.msg})") from None
    asserts = [ast.get_source_segment(source, n) for n in module.body if isinstance(n, ast.Assert)]
    setup = [ast.get_source_segment(source, n) for n in module.body if not isinstance(n, ast.Assert)]
    if not any(asserts):
        raise DataError(f"{where}: assertion holds no assert statement (got {source[:80]!r})")
    return [a for a in asserts if a], "\n".join(s for s in setup if s)


_TEST_MODULES = ("math", "cmath", "re", "collections", "heapq", "itertools")


def _with_imports(assertion: str, setup: str) -> str:
    """An assert snippet that imports the modules it uses (some MBPP+ asserts call math.isclose
    without importing math and relied on the solution's own import)."""
    lines = [setup] if setup else []
    for module in _TEST_MODULES:
        if re.search(rf"\b{module}\.", assertion) and f"import {module}" not in setup:
            lines.append(f"import {module}")
    return "\n".join([*lines, assertion])


def literal_call_args(assertion: str, entry_point: str) -> list[Any] | None:
    """The literal arguments of the first `entry_point(...)` call in an assert, or None."""
    try:
        tree = ast.parse(assertion)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == entry_point:
            try:
                return [ast.literal_eval(arg) for arg in node.args]
            except (ValueError, SyntaxError, TypeError):
                return None
    return None


def conform(value: Any, like: Any) -> Any:
    """Reshape a JSON-decoded `value` after the Python literal `like` (tuples, sets, complex, int keys)."""
    if isinstance(like, (tuple, list, set, frozenset)) and isinstance(value, (list, tuple)):
        examples = list(like)
        if isinstance(like, tuple) and len(examples) == len(value) and not _uniform(examples):
            items = [conform(v, e) for v, e in zip(value, examples, strict=True)]  # a record
        elif examples:
            # nested inputs may be deeper than the literal: shape lists after a container example,
            # or after the literal itself once it has none (recursive structures)
            container = next((e for e in examples if isinstance(e, (tuple, list, set, frozenset))), like)
            items = [conform(v, container if isinstance(v, list) else examples[0]) for v in value]
        else:
            items = list(value)
        try:
            return type(like)(items)
        except TypeError:  # unhashable members for a set: keep the list
            return items
    if isinstance(like, dict) and isinstance(value, dict) and like:
        key_like = next(iter(like))
        value_like = next(iter(like.values()))
        out = {}
        for key, item in value.items():
            key = _conform_key(key, key_like)
            out[key] = conform(item, like.get(key, value_like))
        return out
    if isinstance(like, (int, float, complex)) and not isinstance(like, bool) and isinstance(value, str):
        for kind in (int, float, complex):  # JSON wrote numbers it could not hold as strings
            try:
                return kind(value)
            except ValueError:
                continue
        return value
    if isinstance(like, complex) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return complex(value)
    return value


def conform_args(args: list[Any], like: list[Any]) -> list[Any]:
    """`conform` for a call's argument list: positional, each argument after its own literal."""
    if not isinstance(args, list) or len(args) != len(like):
        return args
    return [conform(value, example) for value, example in zip(args, like, strict=True)]


def _uniform(items: list[Any]) -> bool:
    return len({type(i) for i in items}) <= 1 and not any(isinstance(i, (list, tuple, dict)) for i in items)


def _conform_key(key: Any, like: Any) -> Any:
    if isinstance(like, int) and not isinstance(like, bool) and isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            return key
    return key


def load_mbpp_plus(plus: bool = True, root: str | Path | None = None) -> list[CodeRecord]:
    """MBPP+ (378 problems): the base assertions, plus (with `plus`) the base and extra inputs."""
    path = _path(MBPP_PLUS_FILE, root)
    records = []
    seen: dict[str, int] = {}
    for line, raw in read_jsonl(path):
        task_id = _unique_id(require(raw, "task_id", path, line), seen, path, line)
        number = _MBPP_PLUS_ID.fullmatch(task_id)
        if number is None:
            raise DataError(f"{path}:{line}: field 'task_id' must be 'Mbpp/<number>', got {task_id!r}")
        entry = require(raw, "entry_point", path, line)
        asserts, setup = _split_assertion(require(raw, "assertion", path, line), f"{path}:{line}")
        asserts = [_with_imports(a, setup) for a in asserts]
        inputs: list[Any] = []
        base = 0
        if plus:
            base_input = require(raw, "base_input", path, line, list)
            raw_inputs = base_input + _plus_inputs(raw, path, line)
            like = next(
                (args for a in asserts if (args := literal_call_args(a, entry)) is not None),
                None,
            )
            inputs = [conform_args(args, like) if like is not None else args for args in raw_inputs]
            base = len(base_input)
        oracle = "set_equal" if task_id in _SET_EQUAL else "truthy" if task_id in _TRUTHY else "equal"
        records.append(
            CodeRecord(
                id=task_id,
                prompt=require(raw, "prompt", path, line),
                entry_point=entry,
                reference=require(raw, "canonical_solution", path, line),
                asserts=tuple(asserts),
                inputs=tuple(inputs),
                base_inputs=base,
                atol=_atol(raw, path, line),
                oracle=oracle,
                meta={"mbpp_id": int(number.group(1))},
            )
        )
    if not records:
        raise DataError(f"{path}: no problems")
    return records


def load_mbpp(
    split: str, exclude_ids: set[int] = frozenset(), root: str | Path | None = None
) -> list[CodeRecord]:
    """Original MBPP problems of one split (task-id ranges), minus `exclude_ids` (e.g. the MBPP+ ones)."""
    if split not in MBPP_SPLIT_IDS:
        raise DataError(f"unknown MBPP split {split!r}; known: {sorted(MBPP_SPLIT_IDS)}")
    path = _path(MBPP_FILE, root)
    ids = MBPP_SPLIT_IDS[split]
    records = []
    seen: dict[int, int] = {}
    for line, raw in read_jsonl(path):
        task_id = _unique_id(require(raw, "task_id", path, line, int), seen, path, line)
        if task_id not in ids or task_id in exclude_ids:
            continue
        tests = require(raw, "test_list", path, line, list)
        if not tests:
            raise DataError(f"{path}:{line}: empty test_list")
        for index, test in enumerate(tests):
            if not isinstance(test, str):
                raise DataError(
                    f"{path}:{line}: field 'test_list' must hold strings, item {index} is {type(test).__name__}"
                )
        setup = raw.get("test_setup_code") or ""
        entry = _called_function(tests[0])
        if entry is None:
            raise DataError(f"{path}:{line}: cannot find the tested function in {tests[0]!r}")
        records.append(
            CodeRecord(
                id=f"Mbpp/{task_id}",
                prompt=_mbpp_prompt(require(raw, "text", path, line), tests[0]),
                entry_point=entry,
                reference=require(raw, "code", path, line).replace("\r\n", "\n"),
                asserts=tuple(f"{setup}\n{t}" if setup else t for t in tests),
                meta={"mbpp_id": task_id},
            )
        )
    if not records:
        raise DataError(
            f"{path}: no problems of MBPP split {split!r} (task ids {ids.start}-{ids.stop - 1}"
            f"{', not excluded' if exclude_ids else ''})"
        )
    return records


def _called_function(assertion: str) -> str | None:
    try:
        tree = ast.parse(assertion)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id not in _BUILTIN_CALLS
        ):
            return node.func.id
    return None


_BUILTIN_CALLS = {
    "set",
    "sorted",
    "list",
    "tuple",
    "abs",
    "round",
    "len",
    "str",
    "int",
    "float",
    "frozenset",
    "dict",
}
