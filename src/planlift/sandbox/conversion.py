"""Assert-style tests converted into call tests with data, by running the reference solution once.

An assert snippet (HumanEval's `check(candidate)`, an MBPP assert) runs in record mode with the entry
point wrapped by a spy (`planlift.sandbox.harness`), which reports every call the snippet makes: its call
site, arguments and the reference's output. Each call becomes a `CodeTest(args, expected, oracle)`, with
the comparison the assert applied at that call site, read from the snippet's syntax tree:

    f(x) == y                       -> equal, expected = the reference's output
    f(x) is True / False / None     -> is
    assert f(x) / assert not f(x)   -> equal on bool(output)            (wrap "bool")
    tuple(f(x)) == ... (list, set, sorted, int, str, len, ...) -> equal on the wrapped output
    math.isclose(f(x), y, rel_tol=r, abs_tol=a)             -> equal within r (relative) / a (absolute)
    abs(f(x) - y) < t                                       -> equal within t

A problem-wide oracle (poly_root, truthy) replaces the per-site one. On a problem whose answer is unordered
(set_equal: EvalPlus compares its outputs as sets), an `==` on the output or on a container of it becomes
set_equal too: MBPP's asserts fix one order ("similar_elements(...) == (4, 5)") that the reference happened
to return, and EvalPlus does not run them. A call is dropped, with its reason
counted, when its site reads otherwise, it passes keyword arguments, its arguments or the reference's
output are not plain data, or the reference's poly_root answer is not a root (`oracles.reference_value`);
an assert that calls the function at no site that converts gives no test.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from planlift.sandbox.oracles import WRAPS, decode, reference_value
from planlift.sandbox.protocol import NotPlainData, loads_plain
from planlift.sandbox.records import CodeTest

_PROBLEM_ORACLES = ("poly_root", "truthy")


@dataclass
class Conversion:
    """The tests one assert snippet became, and why the calls that did not convert were dropped."""

    tests: list[CodeTest] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # the reference's time per converted call
    dropped: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class _Comparison:
    oracle: str = "equal"
    wrap: str | None = None
    atol: float = 0.0
    rtol: float = 0.0


def convert(snippet: str, calls: list[Any], oracle: str = "equal", atol: float = 0.0) -> Conversion:
    """The call tests of one assert snippet, from the calls the reference made while it ran."""
    result = Conversion()
    try:
        tree = ast.parse(snippet)
    except SyntaxError:
        result.dropped["assert does not parse"] += len(calls) or 1
        return result
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    call_nodes = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    for site, arguments, keywords, output, seconds in calls:
        node = _node_at(call_nodes, site)
        if keywords:
            result.dropped["keyword arguments"] += 1
            continue
        try:
            args = loads_plain(arguments) if arguments is not None else None
        except NotPlainData:
            args = None
        if not isinstance(args, list):
            result.dropped["arguments are not plain data"] += 1
            continue
        if oracle in _PROBLEM_ORACLES:
            comparison: _Comparison | None = _Comparison(oracle=oracle)
        else:
            comparison = _comparison(node, parents) if node is not None else None
            if oracle == "set_equal" and comparison is not None and _unordered(comparison):
                comparison = replace(comparison, oracle="set_equal")
        if comparison is None:
            result.dropped["the assert compares in a way that does not convert"] += 1
            continue
        expected = _expected(comparison, output, args, atol)
        if expected is _NOT_A_ROOT:
            result.dropped["the reference's answer is not a root"] += 1
            continue
        if expected is _NO_VALUE:
            result.dropped["the reference's output is not plain data"] += 1
            continue
        result.tests.append(
            CodeTest(
                args=args,
                expected=expected,
                oracle=comparison.oracle,
                atol=max(atol, comparison.atol),
                rtol=comparison.rtol,
                wrap=comparison.wrap,
            )
        )
        result.seconds.append(float(seconds))
    return result


_NO_VALUE, _NOT_A_ROOT = object(), object()
_CONTAINERS = (None, "tuple", "list", "set", "frozenset", "sorted")


def _unordered(comparison: _Comparison) -> bool:
    """An equality on the output itself or on a container of its elements (not on len, bool, ...)."""
    return (
        comparison.oracle == "equal"
        and comparison.wrap in _CONTAINERS
        and not (comparison.atol or comparison.rtol)
    )


def _expected(comparison: _Comparison, output: bytes | None, args: list[Any], atol: float) -> Any:
    """The expected value of one converted call (`reference_value` checks a poly_root answer's root)."""
    usable, value = reference_value(output, comparison.oracle, args, atol)
    if not usable:  # plain data, yet not usable: a poly_root answer that is not a root
        return _NOT_A_ROOT if decode(output)[1] is None else _NO_VALUE
    if comparison.wrap is not None:
        try:
            return WRAPS[comparison.wrap](value)
        except Exception:
            return _NO_VALUE
    return value


def _node_at(call_nodes: list[ast.Call], site: Any) -> ast.Call | None:
    if not site:
        return None
    line, end_line, column, end_column = site
    if column is not None:
        for node in call_nodes:
            if (node.lineno, node.end_lineno, node.col_offset, node.end_col_offset) == (
                line,
                end_line,
                column,
                end_column,
            ):
                return node
        return None
    on_line = [n for n in call_nodes if n.lineno == line and isinstance(n.func, ast.Name)]
    return on_line[0] if len(on_line) == 1 else None


def _number(node: ast.AST | None) -> float | None:
    try:
        value = ast.literal_eval(node) if node is not None else None
    except (ValueError, SyntaxError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _asserted(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Must `node` hold for the assert to pass (the assert's test, or a term of an `and` that is)?"""
    parent = parents.get(node)
    while isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.And):
        node, parent = parent, parents.get(parent)
    return isinstance(parent, ast.Assert) and parent.test is node


def _comparison(node: ast.Call, parents: dict[ast.AST, ast.AST]) -> _Comparison | None:
    parent = parents.get(node)
    if _asserted(node, parents):
        return _Comparison(wrap="bool")
    if isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.Not):
        return _Comparison(wrap="bool") if _asserted(parent, parents) else None
    if isinstance(parent, ast.Compare):
        return _compared(parent, node) if _asserted(parent, parents) else None
    if isinstance(parent, ast.Call) and node in parent.args:
        name = (
            parent.func.attr if isinstance(parent.func, ast.Attribute) else getattr(parent.func, "id", None)
        )
        if name == "isclose" and _asserted(parent, parents):
            keywords = {k.arg: _number(k.value) for k in parent.keywords}
            if None in keywords.values() or set(keywords) - {"rel_tol", "abs_tol"}:
                return None
            return _Comparison(rtol=keywords.get("rel_tol", 1e-9), atol=keywords.get("abs_tol", 0.0))
        outer = parents.get(parent)
        if name in WRAPS and len(parent.args) == 1 and not parent.keywords and isinstance(outer, ast.Compare):
            compared = _compared(outer, parent) if _asserted(outer, parents) else None
            return _Comparison(wrap=name) if compared is not None and compared.oracle == "equal" else None
        return None
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Sub) and parent.left is node:
        absolute = parents.get(parent)
        compare = parents.get(absolute)
        if (
            isinstance(absolute, ast.Call)
            and getattr(absolute.func, "id", None) == "abs"
            and isinstance(compare, ast.Compare)
            and compare.left is absolute
            and len(compare.ops) == 1
            and isinstance(compare.ops[0], (ast.Lt, ast.LtE))
            and _asserted(compare, parents)
            and (tolerance := _number(compare.comparators[0])) is not None
        ):
            return _Comparison(atol=tolerance)
    return None


def _compared(compare: ast.Compare, operand: ast.AST) -> _Comparison | None:
    """How `operand` (a side of a single comparison) is compared with the other side."""
    if len(compare.ops) != 1:
        return None
    op = compare.ops[0]
    other = compare.comparators[0] if compare.left is operand else compare.left
    if isinstance(op, ast.Eq):
        return _Comparison()
    if isinstance(op, ast.Is) and isinstance(other, ast.Constant) and other.value in (True, False, None):
        return _Comparison(oracle="is")
    return None
