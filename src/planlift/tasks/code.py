"""Code tasks (HumanEval+, MBPP+): the planner writes a plan, the executor the program, tests decide.

Programs run in `planlift.sandbox` (a pool: `verify_batch` judges a whole rollout's programs in
parallel). The verdict carries `pass_rate` and the program status (correct | failed_tests |
runtime_error | timeout | syntax_error | no_tests), which is what the `code_gated` reward needs; a program
the sandbox could not run at all has status sandbox_error (the reward masks it).

Expected outputs of the EvalPlus call tests are computed once by running the reference solution in the
sandbox, cached under `<cache_dir>/code_expected/` (keyed by the data and the harness), and inputs on
which the reference itself fails are dropped (counted in the log). Each test's time limit is
max(limits.test_timeout, time_factor x the reference's time on it) (the asserts are timed in the same run),
and the whole run's is max(limits.timeout, limits.load_timeout + time_factor x the reference's time over
all tests): under a fixed 20 s, the MBPP+ reference of Mbpp/599 (94 tests) was itself judged a timeout.

Leakage: the plan contains code — a fenced block, a `def name(` or a `lambda x: ...` of any function (a
helper under another name is the program too), `code_lines` or more statements, or a program of fewer: a
`return` together with a statement that computes something (`return sorted(set(a))`, or
`area = 0.5 * h * (a + b)` and `return area`; not `return 0` with `total = 0`), also written inside a
sentence ("Then return sorted(set(a)), which drops duplicates", "It returns max(a) - min(a)", "Compute
sorted(set(a)) and return it": `returns_computed_value`). Statements are lines,
`;`-joined parts of a line, `inline code` spans, or lines wrapped inside brackets or after a backslash,
that parse as Python (an assignment, return, import, raise, a call with arguments, or a block header), once
list markers and "Step n:" / "Step A)" / "a)" prefixes are stripped, or, for a statement that computes
something, a label ("Body: return ...", not a keyword as in "Else: return it"): a program dressed as a
bulleted list is still the program, and prose ("return the pair when the sum matches") does not parse.
English that parses is not code: words joined by `in` / `is` ("return them in order"), hyphenated words
("n-th"), "2^n", math with an ellipsis, and a label with its value ("Output: 6").
The plan is read as the executor reads its characters (`planlift.tasks.visible`: zero-width characters
removed, fullwidth forms made plain).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import itertools
import keyword
import logging
import pickle
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from filelock import FileLock

from planlift.atomic import save_atomically
from planlift.datasets.code import (
    HUMANEVAL_FILE,
    HUMANEVAL_PLUS_FILE,
    MBPP_FILE,
    MBPP_PLUS_FILE,
    CodeRecord,
    load_humaneval,
    load_mbpp,
    load_mbpp_plus,
)
from planlift.datasets.files import data_dir, files_digest
from planlift.errors import ConfigError
from planlift.models.packaged import default_cache_dir
from planlift.sandbox import CodeTest, ProgramJob, Sandbox, conversion, oracles
from planlift.sandbox.oracles import reference_value
from planlift.sandbox.records import SANDBOX_ERROR
from planlift.sandbox.runner import HARNESS_SOURCE
from planlift.tasks.base import (
    REASONING_CLOSE,
    REASONING_OPEN,
    SPLITS,
    ChatPrompt,
    Problem,
    Split,
    Task,
    Verdict,
    check_sizes,
    first_of_split,
)
from planlift.tasks.visible import visible_characters

log = logging.getLogger(__name__)

FENCE = "```"
# Completions that wander past the function into demo code are cut there.
EXECUTOR_STOPS = (FENCE, "\nif __name__", "\nassert ", "\nprint(")
DEFAULT_PLANNER_INSTRUCTION = (
    "Write a short plan for implementing the Python function below: the approach, the steps and the "
    f"edge cases, in plain words. Do not write code. Close with {REASONING_CLOSE}."
)
DEFAULT_EXECUTOR_INSTRUCTION = "Write the Python function. Follow the plan."
DEFAULT_EXECUTOR_ALONE_INSTRUCTION = "Write the Python function."
# A plan line's decoration before a statement: list markers, "Step 2:", "Step A)", "a)", quote marks.
_LINE_PREFIX = re.compile(
    r"^\s*(?:(?:[-*+>•]|\(?\d+[.):]|\(?[A-Za-z]\)|step\s*\d+\s*[:.)-]?|step\s*[A-Za-z]\s*[:.)-])\s+)*",
    re.IGNORECASE,
)
# A label before a statement ("Body: ", "Edge case: "): a word or four, the first not a Python keyword.
_LABEL = re.compile(r"^\s*(?P<first>[A-Za-z][\w'-]*)(?: [\w'-]+){0,3}\s*:\s+(?=\S)")
_INLINE_CODE = re.compile(r"`+([^`]+)`+")
_STATEMENTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Import, ast.ImportFrom, ast.Raise)
_BLOCKS = (ast.For, ast.While, ast.If, ast.With, ast.FunctionDef, ast.ClassDef, ast.Try)
# Node kinds that say nothing by themselves (contexts and operators): not counted in an expression's size.
_BARE_NODES = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop)
# A line wrapped after this many more lines is not one statement.
_MAX_WRAPPED_LINES = 12
# "lambda", parameters (a name, * or **: "lambda x, y:", "lambda *args:") and the colon, on one line
_LAMBDA = re.compile(r"\blambda\s+\*{0,2}[A-Za-z_]\w*[^:\n]{0,200}:")
_PROSE_GOES_ON = re.compile(r"\s+[A-Za-z]")
_TOKEN_END = re.compile(r"\w+|[^\w\s]")  # where a lambda's text may end: after a word or a symbol
_PARSE_FAILURES = (SyntaxError, ValueError, MemoryError, RecursionError)  # deep nesting, huge input
_STRING = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
# "return" in a sentence ("Then return sorted(set(a)), which ...", "The body is: return a == a[::-1]", "It
# returns len(s) - 1", "Return value: max(a)")
_RETURN_IN_PROSE = re.compile(r"\breturn(?:s|ing|ed)?(?:\s+value)?(?:\s*[:=]|\s+is)?\s+(?=\S)", re.IGNORECASE)
# "return" after the value: "Compute sorted(set(a)) and return it", "a == a[::-1] is returned"
# A hyphen between letters joins words ("non-negative", "n-th", "e-mail"), read as one name: "return
# non-negative numbers" is prose, not a subtraction ("a-b" of two names is lost; "max(a)-min(a)" is kept).
_HYPHENATED = re.compile(r"(?<=[A-Za-z])-(?=[A-Za-z])")
_RETURNED_IN_PROSE = re.compile(
    r"\s+(?:and\s+(?:then\s+)?return\s+(?:it|that|this|them|the\s+result|the\s+value)\b|(?:is|gets)\s+returned\b)",
    re.IGNORECASE,
)
# Nodes that compute: a value holding one of them and a name is an expression, not words after "return"
# ("i and j", "True or False" hold none)
_COMPUTING = (
    ast.Call, ast.BinOp, ast.Compare, ast.Subscript, ast.IfExp, ast.Lambda,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
)  # fmt: skip
_WORD_COMPARISONS = (ast.In, ast.NotIn, ast.Is, ast.IsNot)


def _is_code(text: str) -> bool:
    """Whether `text` is one Python statement: an assignment, return, import or a call with arguments, or
    the header of a block ("for x in xs:", "elif x:", "else:"). Prose rarely parses ("return the pair
    when ..."); a comment or a markdown heading ("### Output:") is not a statement, nor is a bare
    `upper()` named in a sentence, nor "return them in order" (`_joined_words`), nor a label with its value
    ("Output: 6" parses as an annotation)."""
    return _statement(text) is not None


def _statement(text: str) -> ast.stmt | None:
    """The statement `text` is (`_is_code`), or None; a block header gives its block (`pass` as body)."""
    text = text.strip().rstrip(".")
    if not text or text.startswith("#"):
        return None
    if text.endswith(":"):
        # the header alone, or after an `if` (elif / else) or a `try` (except / finally); the block must
        # then hold the header's own clause, not only the wrapper's
        for source, clause in (
            (f"{text}\n    pass", lambda node: isinstance(node, _BLOCKS)),
            (f"{text}\n    pass\nfinally:\n    pass", lambda node: isinstance(node, ast.Try)),  # try:
            (f"if 0:\n    pass\n{text}\n    pass", lambda node: isinstance(node, ast.If) and node.orelse),
            (f"try:\n    pass\n{text}\n    pass", lambda node: isinstance(node, ast.Try)),  # except / finally
        ):
            with contextlib.suppress(*_PARSE_FAILURES):
                body = ast.parse(source).body
                if len(body) == 1 and clause(body[0]):
                    return body[0]
        return None
    try:
        body = ast.parse(text).body
    except _PARSE_FAILURES:
        return None
    if len(body) != 1:
        return None
    node = body[0]
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return node if node.value.args or node.value.keywords else None
    if isinstance(node, ast.Return) and _joined_words(node.value):
        return None  # "return them in order", "return it in lowercase"
    if isinstance(node, ast.AnnAssign) and node.value is None:
        return None  # a label and its value: "Input: [4, 2, 3]", "Output: 6"
    return node if isinstance(node, _STATEMENTS) else None


def _size(node: ast.AST | None) -> int:
    """Nodes of an expression, contexts and operators left out: `x` and `-1` are 1 and 2, `len(s)` 3."""
    return 0 if node is None else sum(not isinstance(n, _BARE_NODES) for n in ast.walk(node))


def _computes(node: ast.stmt) -> bool:
    """A statement that computes something: a call with arguments, or a return or assignment of an
    expression beyond a name or a constant (`return sorted(xs)`, `x = a + b`; not `return 0`, `total = 0`,
    `count += 1`), or the header of a block with a condition or an iteration (not `else:`, `try:`)."""
    if isinstance(node, ast.Expr):
        return True  # `_statement` keeps only calls with arguments
    if isinstance(node, (ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign)):
        return _size(node.value) > 2
    if isinstance(node, (ast.For, ast.While, ast.With)):
        return True
    if isinstance(node, ast.If):  # `if x:`; `elif x:` parses as an `if 0:` whose else holds an if
        return not isinstance(node.test, ast.Constant) or any(isinstance(n, ast.If) for n in node.orelse)
    return False


def _plain(line: str) -> str:
    """A plan line without backticks and list markers / step prefixes."""
    return _LINE_PREFIX.sub("", line.replace("`", ""))


def _parts(text: str) -> list[ast.stmt]:
    """The statements among the `;`-joined parts of `text`."""
    return [node for part in text.split(";") if (node := _statement(part))]


def _line_statements(line: str) -> list[ast.stmt]:
    """The statements of one line, read the way that finds the most: the line's `;`-joined parts, its
    `inline code` spans, or (statements that compute something only) the line after a label."""
    plain = _plain(line)
    readings = [_parts(plain), [node for span in _INLINE_CODE.findall(line) for node in _parts(span)]]
    label = _LABEL.match(plain)
    if label and not keyword.iskeyword(label.group("first").lower()):
        after = plain[label.end() :]
        readings.append([node for node in _parts(after) if _computes(node)])
    return max(readings, key=len)


def _depth(text: str) -> int:
    """Brackets opened and not closed in `text` (string literals left out)."""
    text = _STRING.sub("", text)
    return sum(text.count(c) for c in "([{") - sum(text.count(c) for c in ")]}")


def _wrapped_end(lines: list[str], start: int) -> int:
    """The end (exclusive) of the statement starting at `lines[start]` when it is wrapped over the next
    lines, inside open brackets or after a backslash; `start + 1` when it is not (or never closes)."""
    depth, end = 0, start
    while end < len(lines) and end - start <= _MAX_WRAPPED_LINES:
        line = _plain(lines[end])
        depth += _depth(line)
        end += 1
        if depth <= 0 and not line.rstrip().endswith("\\"):
            return end
    return start + 1


def code_in(reasoning: str) -> list[ast.stmt]:
    """The Python statements of a plan: each line's (`_line_statements`), and a statement wrapped over lines
    read as one when that finds more."""
    lines = reasoning.splitlines()
    found: list[ast.stmt] = []
    start = 0
    while start < len(lines):
        end = _wrapped_end(lines, start)
        by_line = [node for line in lines[start:end] for node in _line_statements(line)]
        if end - start > 1:
            joined = " ".join(_plain(line).strip().removesuffix("\\") for line in lines[start:end])
            by_line = max(_parts(joined), by_line, key=len)
        found += by_line
        start = end
    return found


def code_statements(reasoning: str) -> int:
    """How many lines (or `;`-joined parts, or `inline code` spans, or wrapped statements) of a plan are
    Python statements, once list markers, step prefixes and labels are stripped (`code_in`)."""
    return len(code_in(reasoning))


def is_program(statements: list[ast.stmt]) -> bool:
    """A `return` of a value and a statement that computes something (`_computes`; the return itself may be
    it). A bare `return` is a keyword named in a sentence ("then `return` the first one") more often than
    a program's last line."""
    returns = any(isinstance(node, ast.Return) and node.value is not None for node in statements)
    return returns and any(map(_computes, statements))


def _first_matches(pattern: re.Pattern, reasoning: str, limit: int) -> Iterator[re.Match]:
    """The first `limit` matches of `pattern` in the reasoning's lines."""
    return itertools.islice((m for line in reasoning.splitlines() for m in pattern.finditer(line)), limit)


def _prefix_expressions(text: str, start: int, ends: int) -> Iterator[tuple[ast.expr, int]]:
    """(expression, end) for each prefix `text[:end]` that parses as an expression, `end` being one of the
    first `ends` word or symbol ends from `start`, shortest first: a text full of broken expressions costs
    a bounded number of parses."""
    for token in itertools.islice(_TOKEN_END.finditer(text, start), ends):
        try:
            node = ast.parse(text[: token.end()], mode="eval").body
        except _PARSE_FAILURES:
            continue
        yield node, token.end()


def _suffix_expressions(text: str, ends: int) -> Iterator[ast.expr]:
    """Each suffix of `text` that parses as an expression, starting at one of the last `ends` word or
    symbol starts, shortest first (as `_prefix_expressions`, backwards)."""
    starts = [token.start() for token in _TOKEN_END.finditer(text)][-ends:]
    for start in reversed(starts):
        try:
            yield ast.parse(text[start:].strip(), mode="eval").body
        except _PARSE_FAILURES:
            continue


def _text_from(match: re.Match, start: int) -> str:
    """The match's line from `start` on, backticks dropped, at most 300 characters."""
    return match.string[start:].replace("`", "")[:300]


def _text_before(match: re.Match) -> str:
    """The match's line before it, backticks dropped, at most 300 characters."""
    return match.string[: match.start()].replace("`", "")[-300:]


def _joined_words(node: ast.AST) -> bool:
    """Words joined by a keyword, read as English: "them in order", "it in lowercase", "True is list" (a
    comparison by `in` / `is` of names and constants alone; `x in seen` is lost)."""
    return (
        isinstance(node, ast.Compare)
        and all(isinstance(op, _WORD_COMPARISONS) for op in node.ops)
        and all(isinstance(x, ast.Name | ast.Constant) for x in [node.left, *node.comparators])
    )


def _computing(node: ast.AST) -> bool:
    """A node that computes (`_COMPUTING`), words joined by a keyword (`_joined_words`) and "2^n" (math's
    power, not Python's xor) left out."""
    if isinstance(node, ast.Compare):
        return not _joined_words(node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        return False
    return isinstance(node, _COMPUTING)


def _computes_from_name(node: ast.expr) -> bool:
    """An expression that computes (`_computing`) from a name: `sorted(set(a))`, `n - 1`; not `i and j`, nor
    math with an ellipsis ("returns [a_1+b_1,...,a_n+b_n]", as an MBPP+ description writes)."""
    nodes = list(ast.walk(node))
    if any(isinstance(n, ast.Constant) and n.value is Ellipsis for n in nodes):
        return False
    return any(map(_computing, nodes)) and any(isinstance(n, ast.Name) for n in nodes)


def has_lambda(reasoning: str, headers: int = 20, ends: int = 40) -> bool:
    """A `lambda` with parameters that parses ("lambda x: x * 2", also inside a sentence or a call); not
    "a lambda: it is shorter". Each header with parameters (the first `headers` of the reasoning) is parsed
    up to each of the first `ends` word or symbol ends after its colon, shortest first: the shortest lambda
    that parses is enough, and a reasoning full of broken ones costs a bounded number of parses. A body of
    one name or constant that prose goes on from is prose ("a lambda function: it has no name")."""
    for match in _first_matches(_LAMBDA, reasoning, headers):
        rest = _text_from(match, match.start())
        for node, end in _prefix_expressions(rest, rest.index(":") + 1, ends):
            if not isinstance(node, ast.Lambda) or not (node.args.args or node.args.vararg):
                continue
            if isinstance(node.body, ast.Name | ast.Constant) and _PROSE_GOES_ON.match(rest, end):
                continue
            return True
    return False


def returns_computed_value(reasoning: str, returns: int = 20, ends: int = 40) -> bool:
    """A return in a sentence whose value is an expression that computes from a name: "Return
    sorted(set(a)).", "Then return a == a[::-1], which is the check", "Body (one line): return n - 1", "It
    returns max(a) - min(a)", "Compute sorted(set(a)) and return it", "n % 2 == 0 is returned"; not "return
    the pair", "return True or False", "return i and j", "return i, j", "return result at the end", "sort the
    list and return it", "return non-negative numbers" (`_HYPHENATED`). As in `has_lambda`, the text after each of the first `returns` "return"s is parsed
    up to each of its first `ends` word or symbol ends, shortest first (the text before an "and return it",
    from each of its last `ends` word or symbol starts)."""
    after = (
        node
        for match in _first_matches(_RETURN_IN_PROSE, reasoning, returns)
        for node, _ in _prefix_expressions(_HYPHENATED.sub("_", _text_from(match, match.end())), 0, ends)
    )
    before = (
        node
        for match in _first_matches(_RETURNED_IN_PROSE, reasoning, returns)
        for node in _suffix_expressions(_HYPHENATED.sub("_", _text_before(match)), ends)
    )
    return any(map(_computes_from_name, itertools.chain(after, before)))


_DEF = re.compile(r"\bdef\s+[A-Za-z_]\w*\s*\(")


class CodeTask(Task):
    """Shared machinery of the code tasks. Subclasses provide `_records(split)`.

    Args:
        sandbox: the Sandbox (or its kwargs) that runs the programs.
        plus: include the EvalPlus extra inputs (False: the original tests only).
        max_inputs: keep at most this many call inputs per problem (None = all; the base inputs first).
        time_factor: a call test may take this many times the reference's time (at least
            sandbox limits.test_timeout).
        code_lines: plan lines that read as code before the plan counts as leaking the program.
        cache_dir: where the expected outputs are cached (None = outputs/cache).
        sizes: at most this many problems per split, the first in file order (e.g. {train: 200};
            absent = all). Only those records' expected outputs are computed; a record left without a
            test after conversion is then left out (logged), so a split may hold fewer.
        allow_host_filesystem: accept a sandbox whose programs see the host's filesystem (isolation
            without bubblewrap). Refused by default: there a program can read the vendored reference
            solutions and, under the caller's uid, rewrite the cached expected outputs, i.e. be judged
            correct without solving the problem. With bubblewrap, the data and the expected outputs are
            hidden from programs where its read-only world holds them (`Isolation.hiding`).
    """

    task_type = "code"

    def __init__(
        self,
        sandbox: Sandbox | dict[str, Any] | None = None,
        plus: bool = True,
        max_inputs: int | None = None,
        time_factor: float = 4.0,
        code_lines: int = 3,
        cache_dir: str | None = None,
        system_prompt: str | None = None,
        planner_instruction: str = DEFAULT_PLANNER_INSTRUCTION,
        executor_instruction: str = DEFAULT_EXECUTOR_INSTRUCTION,
        executor_alone_instruction: str = DEFAULT_EXECUTOR_ALONE_INSTRUCTION,
        sizes: dict[str, int] | None = None,
        allow_host_filesystem: bool = False,
    ) -> None:
        if max_inputs is not None and max_inputs < 0:
            raise ConfigError(f"task.max_inputs must be >= 0 or null, got {max_inputs}")
        if time_factor <= 0:
            raise ConfigError(f"task.time_factor must be > 0, got {time_factor}")
        if code_lines < 1:
            raise ConfigError(f"task.code_lines must be >= 1, got {code_lines}")
        self.sizes = check_sizes(sizes)
        self.sandbox = sandbox if isinstance(sandbox, Sandbox) else Sandbox(**(sandbox or {}))
        if not self.sandbox.isolation.private_tmp and not allow_host_filesystem:
            raise ConfigError(
                f"task.sandbox.isolation resolved to {self.sandbox.isolation.mode!r}, where programs see the "
                "host's filesystem: the reference solutions (data/) and the cached expected outputs are "
                "within their reach, so a program could be judged correct without solving the problem. "
                "Install bubblewrap (`make sandbox-deps`) for a read-only world, or set "
                "task.allow_host_filesystem=true to accept the risk"
            )
        self.plus = plus
        self.max_inputs = max_inputs
        self.time_factor = time_factor
        self.code_lines = code_lines
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        # the answers, where the sandbox's read-only world would show them (a checkout under /usr/src)
        self._expected_dir = self.cache_dir / "code_expected"
        self._expected_dir.mkdir(parents=True, exist_ok=True)
        self.sandbox.isolation = self.sandbox.isolation.hiding([data_dir(), self._expected_dir])
        self.system_prompt = system_prompt
        self.planner_instruction = planner_instruction
        self.executor_instruction = executor_instruction
        self.executor_alone_instruction = executor_alone_instruction
        self._splits: dict[str, list[Problem]] = {}
        self._left_out: dict[str, dict[str, dict]] = {}  # split -> {problem without a test: its drops}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data": self._data_digest,  # other tests under the same ids would reuse cached verdicts
            "plus": self.plus,
            "max_inputs": self.max_inputs,
            "time_factor": self.time_factor,
            "system_prompt": self.system_prompt,
            "planner_instruction": self.planner_instruction,
            "executor_instruction": self.executor_instruction,
            "executor_alone_instruction": self.executor_alone_instruction,
            # a verdict depends on the limits it ran under (a cached baseline judged with other timeouts)
            "limits": dataclasses.asdict(self.sandbox.limits),
        }

    # ---- data -------------------------------------------------------------------------------------

    @cached_property
    def _data_digest(self) -> str:
        return files_digest([data_dir() / relative for relative in self._data_files()])

    def _data_files(self) -> list[str]:
        """The data files the problems are read from, relative to `data/`."""
        raise NotImplementedError

    def _records(self, split: Split) -> list[CodeRecord]:
        raise NotImplementedError

    def problems(self, split: Split) -> list[Problem]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; known: {list(SPLITS)}")
        if split not in self._splits:
            records = first_of_split(self._records(split), split, self.sizes, self.name)
            expected = self._expected_outputs(records)
            problems = [self._problem(r, expected.get(r.id)) for r in records]
            untested = [p.id for p in problems if not p.meta["tests"]]
            if untested:
                log.warning(
                    "%s/%s: %d problems have no test left after conversion and are left out: %s",
                    self.name,
                    split,
                    len(untested),
                    ", ".join(untested),
                )
            self._splits[split] = [p for p in problems if p.meta["tests"]]
            self._left_out[split] = {
                p.id: p.meta["dropped_assert_calls"] for p in problems if not p.meta["tests"]
            }
        return self._splits[split]

    def _inputs(self, record: CodeRecord) -> tuple[Any, ...]:
        return record.inputs if self.max_inputs is None else record.inputs[: self.max_inputs]

    def _timeout(self, reference_seconds: float | None) -> float:
        floor = self.sandbox.limits.test_timeout
        return floor if reference_seconds is None else max(floor, self.time_factor * reference_seconds)

    def _problem(self, record: CodeRecord, expected: dict[str, Any] | None) -> Problem:
        tests: list[CodeTest] = []
        reference_seconds = 0.0  # the reference's time over the tests kept
        dropped_calls: Counter = Counter()
        asserts_without_tests = 0
        for converted in (expected or {}).get("asserts", ()):
            if converted is None:  # the reference fails its own assert
                asserts_without_tests += 1
                continue
            tests += [
                dataclasses.replace(test, timeout=self._timeout(seconds))
                for test, seconds in zip(converted.tests, converted.seconds, strict=True)
            ]
            reference_seconds += sum(converted.seconds)
            dropped_calls.update(converted.dropped)
            asserts_without_tests += not converted.tests
        dropped = 0
        if expected is not None:
            for args, output, seconds in zip(
                self._inputs(record), expected["outputs"], expected["seconds"], strict=True
            ):
                if seconds is None:  # the reference failed on this input
                    dropped += 1
                    continue
                reference_seconds += seconds
                tests.append(
                    CodeTest(
                        args=args,
                        expected=output,
                        oracle=record.oracle,
                        atol=record.atol,
                        timeout=self._timeout(seconds),
                    )
                )
        return Problem(
            id=record.id,
            text=record.prompt,
            answer=record.reference,
            meta={
                "record": record,
                "tests": tuple(tests),
                # the whole run may take time_factor x the reference's time (limits.timeout at least)
                "run_timeout": self.sandbox.limits.load_timeout + self.time_factor * reference_seconds,
                "dropped_inputs": dropped,
                "asserts_without_tests": asserts_without_tests,
                "dropped_assert_calls": dict(dropped_calls),
            },
        )

    def _expected_outputs(self, records: list[CodeRecord]) -> dict[str, dict[str, Any]]:
        """{problem id: {"outputs", "seconds" (None: dropped), "asserts": [Conversion or None]}}."""
        todo = [r for r in records if self._inputs(r) or r.asserts]
        if not todo:
            return {}
        digest = hashlib.sha256()
        digest.update(HARNESS_SOURCE.encode())
        digest.update(Path(conversion.__file__).read_bytes())
        digest.update(Path(oracles.__file__).read_bytes())
        # a reference may answer differently on another interpreter (HumanEval/32 on 3.11 and 3.12)
        digest.update(self.sandbox.isolation.python.encode())
        for record in todo:
            digest.update(pickle.dumps((record.id, record.reference, self._inputs(record), record.oracle)))
            digest.update(pickle.dumps((record.asserts, record.atol)))
        path = self._expected_dir / f"{self.name}-{digest.hexdigest()[:16]}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)  # removed since the task was made: made again
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                with path.open("rb") as handle:
                    return pickle.load(handle)
            log.info("%s: running %d reference solutions to convert their tests (once)", self.name, len(todo))
            expected = self._run_references(todo)
            save_atomically(lambda staging: staging.write_bytes(pickle.dumps(expected)), path)
        return expected

    def _run_references(self, records: list[CodeRecord]) -> dict[str, dict[str, Any]]:
        limits = dataclasses.replace(
            self.sandbox.limits,
            timeout=600.0,
            cpu_seconds=600,
            test_timeout=60.0,
            file_size_mb=1024,
            memory_mb=max(self.sandbox.limits.memory_mb, 4096),
        )
        # the asserts run too: converted into call tests, timed like the inputs
        jobs = [
            ProgramJob(
                program=r.reference,
                tests=[CodeTest(code=a) for a in r.asserts]
                + [CodeTest(args=args, oracle=r.oracle) for args in self._inputs(r)],
                entry_point=r.entry_point,
                record_outputs=True,
            )
            for r in records
        ]
        results = self.sandbox.run_many(jobs, limits)
        broken = [
            (r, result) for r, result in zip(records, results, strict=True) if result.status == SANDBOX_ERROR
        ]
        if broken:  # nothing is cached: the next run tries again
            record, result = broken[0]
            raise ConfigError(
                f"{self.name}: the sandbox could not start {len(broken)} of {len(records)} reference solutions "
                f"(first: {record.id}: {result.error}; stderr: {result.stderr_tail[-300:].strip()!r}). Check "
                "task.sandbox.isolation and task.sandbox.python, and the machine's limits on namespaces and "
                "processes; no expected outputs were cached"
            )
        expected = {}
        failures = 0
        for record, result in zip(records, results, strict=True):
            skip = len(record.asserts)
            asserts = [
                conversion.convert(snippet, result.calls.get(i, []), record.oracle, record.atol)
                if i not in result.failed_tests
                else None
                for i, snippet in enumerate(record.asserts)
            ]
            outputs, seconds = [], []
            blobs = list(result.outputs or []) + [None] * (skip + len(self._inputs(record)))
            for i, args in enumerate(self._inputs(record), start=skip):
                kept, value = reference_value(blobs[i], record.oracle, args, record.atol)
                ran = i not in result.failed_tests and kept
                outputs.append(value)
                seconds.append(result.test_seconds.get(i) if ran else None)
            failures += sum(s is None for s in seconds)
            expected[record.id] = {"outputs": outputs, "seconds": seconds, "asserts": asserts}
        if failures:
            log.warning(
                "%s: the reference solutions fail on %d inputs (or return no plain data, or too much); "
                "those tests are dropped",
                self.name,
                failures,
            )
        return expected

    def conversion_report(self, split: Split) -> dict[str, Any]:
        """How the split's assert-style tests became call tests (see `planlift.sandbox.conversion`)."""
        problems = self.problems(split)
        dropped: Counter = Counter()
        for problem in problems:
            dropped.update(problem.meta["dropped_assert_calls"])
        for drops in self._left_out[split].values():
            dropped.update(drops)
        return {
            "problems": len(problems),
            "left_out": list(self._left_out[split]),
            "asserts": sum(len(p.meta["record"].asserts) for p in problems),
            "asserts_without_tests": sum(p.meta["asserts_without_tests"] for p in problems),
            "tests": sum(len(p.meta["tests"]) for p in problems),
            "dropped_assert_calls": dict(dropped),
            "dropped_inputs": sum(p.meta["dropped_inputs"] for p in problems),
        }

    # ---- prompts ----------------------------------------------------------------------------------

    def _record(self, problem: Problem) -> CodeRecord:
        return problem.meta["record"]

    def planner_prompt(self, problem: Problem) -> ChatPrompt:
        return ChatPrompt(
            user=f"{self.planner_instruction}\n\n{FENCE}python\n{problem.text.rstrip()}\n{FENCE}",
            system=self.system_prompt,
            prefill=f"{REASONING_OPEN}\n",
            stop=(REASONING_CLOSE,),
        )

    def executor_prompt(self, problem: Problem, reasoning: str | None) -> ChatPrompt:
        task = f"{FENCE}python\n{problem.text.rstrip()}\n{FENCE}"
        if reasoning is None:
            user = f"{self.executor_alone_instruction}\n\n{task}"
        else:
            user = f"{self.executor_instruction}\n\n{task}\n\nPlan:\n{reasoning.strip()}"
        # Only the fence is prefilled: prefilling HumanEval's signature and docstring too made SmolLM2
        # close the block at once (it reads as finished code).
        return ChatPrompt(
            user=user, system=self.system_prompt, prefill=f"{FENCE}python\n", stop=EXECUTOR_STOPS
        )

    def executor_target(self, problem: Problem) -> str:
        return f"{self._record(problem).reference.rstrip()}\n{FENCE}"

    def program(self, problem: Problem, executor_output: str) -> str:
        """The program a reply stands for. HumanEval: the prompt (its imports and helper functions) and
        then the reply, which either redefines the function or continues its body."""
        record = self._record(problem)
        code = executor_output.split(FENCE, 1)[0]
        return f"{record.prompt}\n{code}" if record.completion_style else code

    # ---- judging ----------------------------------------------------------------------------------

    def extract_reasoning(self, completion: str) -> str:
        reasoning = completion.split(REASONING_CLOSE, 1)[0]
        if reasoning and not reasoning.endswith("\n"):
            reasoning += "\n"
        return reasoning

    def verify(self, problem: Problem, executor_output: str) -> Verdict:
        return self.verify_batch([problem], [executor_output])[0]

    def verify_batch(
        self, problems: Sequence[Problem], outputs: Sequence[str], early_exit: bool | Sequence[bool] = False
    ) -> list[Verdict]:
        flags = [early_exit] * len(problems) if isinstance(early_exit, bool) else list(early_exit)
        jobs = [
            ProgramJob(
                program=self.program(problem, output),
                tests=problem.meta["tests"],
                entry_point=self._record(problem).entry_point,
                stop_on_failure=flag,
                timeout=problem.meta["run_timeout"],
            )
            for problem, output, flag in zip(problems, outputs, flags, strict=True)
        ]
        return [
            Verdict(correct=r.ok, pass_rate=r.pass_rate, status=r.status, parsed=r.error)
            for r in self.sandbox.run_many(jobs)
        ]

    def detect_leakage(self, problem: Problem, reasoning: str) -> bool:
        reasoning = visible_characters(reasoning)
        if FENCE in reasoning:
            return True
        if _DEF.search(reasoning) or has_lambda(reasoning) or returns_computed_value(reasoning):
            return True
        statements = code_in(reasoning)
        return len(statements) >= self.code_lines or is_program(statements)


class HumanEvalTask(CodeTask):
    """HumanEval+ (164 problems; `plus: false` = the original HumanEval tests). Evaluation only:
    it has a test split and no train or validation split (train on task=mbpp)."""

    name = "humaneval"

    def _data_files(self) -> list[str]:
        return [HUMANEVAL_PLUS_FILE if self.plus else HUMANEVAL_FILE]

    def _records(self, split: Split) -> list[CodeRecord]:
        if split != "test":
            raise ConfigError(
                f"task=humaneval has only a test split (asked for {split!r}): train with task=mbpp and "
                "evaluate on HumanEval with `python src/evaluate.py task=humaneval`"
            )
        return load_humaneval(plus=self.plus)


class MBPPTask(CodeTask):
    """MBPP: test = the 378 MBPP+ problems (base assertions + EvalPlus inputs); train / validation =
    MBPP's own train (601-974) / validation (511-600) problems that are not in MBPP+ (their 3 asserts)."""

    name = "mbpp"

    def _data_files(self) -> list[str]:
        return [MBPP_PLUS_FILE, MBPP_FILE]

    def _records(self, split: Split) -> list[CodeRecord]:
        test = load_mbpp_plus(plus=self.plus)
        if split == "test":
            return test
        return load_mbpp(split, exclude_ids={r.meta["mbpp_id"] for r in test})
