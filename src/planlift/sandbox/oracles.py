"""Whether a returned value passes a call test: decided in the parent, on plain data only.

Oracles (`CodeTest.oracle`):
- equal: `out == expected`, or equal within a float tolerance (atol, and rtol relative to expected;
  a float expected gets at least 1e-6 + 1e-7 relative; an int expected is exact unless the test gives a
  tolerance, so 15.0 passes for 15 and 15.0000009 does not; NaN equals only NaN, inf only the same inf;
  lists, tuples and dicts element by element);
- set_equal: the same elements in any order (EvalPlus's unordered-answer problems);
- truthy: expected True / False stands for "returns something / returns None" (EvalPlus's regex
  matchers, whose answer is a match object: a value that is not plain data counts as something);
- poly_root: any root of the polynomial args[0] (HumanEval/32; `is_root`);
- is: the same singleton (`assert f(x) is True`).
`wrap` (tuple | list | set | frozenset | sorted | bool | int | float | str | len | abs) is applied to the
output first, as the assert it came from applied it (`assert tuple(f(x)) == ...`, `assert not f(x)`).
The expected value was computed the same way from the reference's output, when the test was converted.
"""

from __future__ import annotations

import math
from typing import Any

from planlift.sandbox.protocol import NotPlainData, loads_plain, nodes, plain_frozenset, plain_set

ORACLES = ("equal", "set_equal", "truthy", "poly_root", "is")
WRAPS = {
    "tuple": tuple,
    "list": list,
    "set": plain_set,  # a returned list of colliding ints: refused, not N**2 probes here
    "frozenset": plain_frozenset,
    "sorted": sorted,
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "len": len,
    "abs": abs,
}
_DEFAULT_ATOL, _DEFAULT_RTOL = 1e-6, 1e-7


def close(out: Any, expected: Any, atol: float = 0.0, rtol: float = 0.0) -> bool:
    """Equal, with a float tolerance (bool against bool or int: plain `==`)."""
    if isinstance(out, bool) or isinstance(expected, bool):
        return out == expected
    if isinstance(expected, (int, float)) and isinstance(out, (int, float)):
        if isinstance(expected, float) and math.isnan(expected):
            return isinstance(out, float) and math.isnan(out)
        if isinstance(expected, int) and (isinstance(out, int) or not (atol or rtol)):
            return out == expected  # an int answer is exact unless the test gives a tolerance (EvalPlus)
        if math.isinf(expected) or (isinstance(out, float) and math.isinf(out)):
            return out == expected  # a tolerance relative to inf would accept any number
        tolerance = max(atol, _DEFAULT_ATOL) + max(rtol, _DEFAULT_RTOL) * abs(expected)
        try:
            return abs(out - expected) <= tolerance
        except OverflowError:  # an int too large for a float against a float: not within any tolerance
            return False
    if isinstance(expected, (list, tuple)):
        return (
            type(out) is type(expected)
            and len(out) == len(expected)
            and all(close(o, e, atol, rtol) for o, e in zip(out, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(out, dict)
            and out.keys() == expected.keys()
            and all(close(out[k], expected[k], atol, rtol) for k in expected)
        )
    return False


def decode(output: bytes | None) -> tuple[Any, str | None]:
    """(value, None) for a pickled value that is plain data, else (None, why it is not)."""
    if output is None:
        return None, "the return value is not plain data (or is too large)"
    try:
        return loads_plain(output), None
    except NotPlainData as error:
        return None, f"the return value is not plain data ({error})"


def _something(value: Any, is_data: bool) -> bool:
    """The truthy oracle's reading: not data (a match object) is something; a bool answers for itself."""
    if not is_data:
        return True
    return value if isinstance(value, bool) else value is not None


def is_root(coefficients: Any, x: Any, atol: float = 0.0) -> bool:
    """Is `x` a root of sum(c_i x^i)? |p(x)| <= max(atol, 1e-6) (the dataset's criterion), or p(x) is zero
    to the rounding of its terms (|p(x)| <= 1e-12 sum |c_i x^i|: x is an exact root of a polynomial
    whose coefficients moved by 1e-12 relative). The float closest to a root of a polynomial with large
    terms fails the absolute test by a lot (1e7 x^11 at x ~ 17: |p| ~ 2e-3): which of those passed
    depended on the rounding of sum(), which differs between Python 3.11 and 3.12. math.fsum rounds
    exactly, so the verdict is the same on every Python."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        terms = [float(c * x**i) for i, c in enumerate(coefficients)]
        residual, scale = abs(math.fsum(terms)), math.fsum(abs(t) for t in terms)
    except (OverflowError, ValueError):  # too large for a float, or inf - inf
        return False
    if not (math.isfinite(residual) and math.isfinite(scale)):
        return False
    return residual <= max(atol, 1e-6) or residual <= 1e-12 * scale


def _text_longer(value: Any, limit: int) -> bool:
    """Is `str(value)` of a container surely longer than `limit` characters? Counted without writing it:
    each text inside is printed with its quotes, each other node takes at least one character."""
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return False  # a number or text prints at the size of its pickle
    length = 0
    for item in nodes(value):
        length += len(item) + 2 if isinstance(item, (str, bytes, bytearray)) else 1
        if length > limit:
            return True
    return False


def reference_value(
    output: bytes | None, oracle: str, args: Any = None, atol: float = 0.0
) -> tuple[bool, Any]:
    """(usable, expected value) from a reference solution's pickled output under `oracle`. Given the
    call's `args`, a poly_root answer is usable only if it is a root: the reference is checked, not copied."""
    value, reason = decode(output)
    if oracle == "truthy":  # a match object is not data: its presence is the answer
        return True, _something(value, reason is None)
    if reason is None and oracle == "poly_root" and args is not None:
        return bool(args) and is_root(args[0], value, atol), value
    return reason is None, value


def judge(test: Any, output: bytes | None) -> tuple[bool, str | None]:
    """(passed, why not) for one call test and the pickled value its program returned."""
    value, reason = decode(output)
    if test.oracle == "truthy":
        return _something(value, reason is None) == test.expected, None
    if reason:
        return False, reason
    try:
        return _judge_value(test, value), None
    except (RecursionError, MemoryError):
        return False, "the return value is too deep to compare"
    except Exception as error:  # a wrap or an oracle on an unexpected type: a wrong answer
        return False, f"{type(error).__name__} while judging: {error}"[:200]


def _judge_value(test: Any, value: Any) -> bool:
    if test.wrap == "str" and isinstance(test.expected, str) and _text_longer(value, len(test.expected)):
        return False  # without writing it: [s] * 10**6 pickles in 2 MB and prints in 2 GB
    if test.wrap is not None:
        value = WRAPS[test.wrap](value)
    expected = test.expected
    if test.oracle == "is":
        return value is expected
    if test.oracle == "set_equal":
        return plain_set(value) == set(expected)
    if test.oracle == "poly_root":
        return is_root(test.args[0], value, test.atol)
    if value == expected:
        return True
    return close(value, expected, test.atol, test.rtol)
