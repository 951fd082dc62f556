"""Localized negatives for GSM8K worked solutions (the `####` line and calculator annotations removed).

An *equation* is `<numbers joined by + - * / x> = <number>` inside a line whose left side evaluates to the
right side (checked, so prose like "3-4 hours" is never treated as arithmetic). Kinds:

    changed_number          one operand of one equation misread; its result and every later use of that
                            result are recomputed (the error propagates consistently)
    swapped_operation       one operator swapped (+ <-> -, * <-> /); recomputed and propagated
    dropped_step            one intermediate line with a number removed (a line of prose is no step)
    unsupported_conclusion  the final line states a number its own steps do not give
    premature_answer        the solution stops after an intermediate line and concludes with its number
    answer_leaked           the correct final answer with no work
    irrelevant_detour       an extra, true but unused computation with numbers from the problem

Every negative differs from the positive; a kind that cannot apply (no equation, one line) is skipped.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import re
from collections.abc import Sequence

KINDS = (
    "changed_number",
    "swapped_operation",
    "dropped_step",
    "unsupported_conclusion",
    "premature_answer",
    "answer_leaked",
    "irrelevant_detour",
)

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
NUMBER = re.compile(rf"(?<![\w.]){_NUM}(?![\w])")
_OPERAND = rf"\(*\$?{_NUM}\)*"
_OP = r"[-+*/x×÷]"
EQUATION = re.compile(
    rf"(?P<expr>{_OPERAND}(?:\s*{_OP}\s*{_OPERAND})+)(?P<eq>\s*=\s*\$?)(?P<result>{_NUM})(?![\d])"
)
OPERATOR = re.compile(r"(?<=[\d)\s])([-+*/x×÷])(?=[\s($\d])")
SWAPS = {"+": "-", "-": "+", "*": "/", "x": "/", "×": "/", "/": "*", "÷": "*"}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
DETOURS = (
    "We could also work out {a} {op} {b} = {c}, but that is not needed here.",
    "Note that {a} {op} {b} = {c}.",
    "Separately, {a} {op} {b} = {c}.",
)


def parse_number(text: str) -> float:
    return float(text.replace(",", "").replace("$", ""))


def format_value(value: float) -> str:
    """Integers plainly, others with 2 decimals (4 below 1, so small values do not round to 0)."""
    if abs(value - round(value)) < 1e-9:
        return str(round(value))
    return f"{value:.{2 if abs(value) >= 1 else 4}f}".rstrip("0").rstrip(".")


def evaluate(expression: str) -> float | None:
    """The value of an arithmetic expression over numbers, or None (unbalanced, division by zero ...)."""
    text = expression.replace("$", "").replace(",", "")
    text = text.replace("×", "*").replace("÷", "/")
    text = re.sub(r"(?<=[\d)\s])x(?=[\s(\d])", "*", text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError("not arithmetic")

    try:
        value = walk(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=0.005)


def equations(line: str) -> list[re.Match]:
    """The equations of a line whose left side evaluates to the stated result."""
    found = []
    for match in EQUATION.finditer(line):
        value = evaluate(match.group("expr"))
        if value is not None and _same(value, parse_number(match.group("result"))):
            found.append(match)
    return found


def _key(value: float) -> float:
    return round(value, 6)


def _substitute(text: str, changed: dict[float, float]) -> str:
    return NUMBER.sub(
        lambda m: (
            format_value(changed[_key(parse_number(m.group(0)))])
            if _key(parse_number(m.group(0))) in changed
            else m.group(0)
        ),
        text,
    )


def rewrite_line(line: str, changed: dict[float, float]) -> str | None:
    """`line` with changed values substituted and its equations recomputed; new results join `changed`.

    None when a recomputation is impossible (division by zero)."""
    pieces, position = [], 0
    for match in equations(line):
        pieces.append(_substitute(line[position : match.start()], changed))
        expression = match.group("expr")
        new_expression = _substitute(expression, changed)
        result = match.group("result")
        if new_expression != expression:
            value = evaluate(new_expression)
            if value is None:
                return None
            old = parse_number(result)
            if not _same(value, old):
                changed[_key(old)] = value
            result = format_value(value)
        pieces.append(new_expression + match.group("eq") + result)
        position = match.end()
    pieces.append(_substitute(line[position:], changed))
    return "".join(pieces)


def _propagate(lines: list[str], start: int, changed: dict[float, float]) -> list[str] | None:
    """Lines after `start` rewritten with the changed values (the error carried forward)."""
    out = list(lines[: start + 1])
    for line in lines[start + 1 :]:
        rewritten = rewrite_line(line, changed)
        if rewritten is None:
            return None
        out.append(rewritten)
    return out


class GSM8KPerturber:
    """Builds the negatives of one GSM8K solution."""

    def __init__(self, question: str, solution: str, answer: str, rng: random.Random) -> None:
        self.question = question
        self.lines = [line for line in solution.splitlines() if line.strip()]
        self.answer = answer
        self.rng = rng
        self.equations = [(i, m) for i, line in enumerate(self.lines) for m in equations(line)]

    def _wrong(self, value: float) -> float:
        integral = abs(value - round(value)) < 1e-9
        options = [value + d for d in (1, 2, 3, 5, 10, -1, -2)] + [value * 2]
        if value >= 10 and integral:
            options.append(value + 10 ** (len(str(int(value))) - 1))
        options = [o for o in options if o > 0 and not _same(o, value)]
        return self.rng.choice(options)

    def _replace_equation(self, index: int, match: re.Match, new_expression: str) -> list[str] | None:
        value = evaluate(new_expression)
        old = parse_number(match.group("result"))
        if value is None or value < 0 or _same(value, old):
            return None
        line = self.lines[index]
        lines = list(self.lines)
        lines[index] = (
            line[: match.start()]
            + new_expression
            + match.group("eq")
            + format_value(value)
            + line[match.end() :]
        )
        return _propagate(lines, index, {_key(old): value})

    def changed_number(self) -> str | None:
        options = [(i, m, n) for i, m in self.equations for n in NUMBER.finditer(m.group("expr"))]
        self.rng.shuffle(options)
        for index, match, number in options[:8]:
            expression = match.group("expr")
            wrong = format_value(self._wrong(parse_number(number.group(0))))
            new_expression = expression[: number.start()] + wrong + expression[number.end() :]
            lines = self._replace_equation(index, match, new_expression)
            if lines is not None:
                return "\n".join(lines)
        return None

    def swapped_operation(self) -> str | None:
        options = [(i, m, o) for i, m in self.equations for o in OPERATOR.finditer(m.group("expr"))]
        self.rng.shuffle(options)
        for index, match, op in options[:8]:
            expression = match.group("expr")
            new_expression = expression[: op.start()] + SWAPS[op.group(1)] + expression[op.end() :]
            lines = self._replace_equation(index, match, new_expression)
            if lines is not None:
                return "\n".join(lines)
        return None

    def dropped_step(self) -> str | None:
        # only a line that computes or states a number is a step: dropping a line of prose loses nothing
        steps = [i for i, line in enumerate(self.lines[:-1]) if NUMBER.search(line)]
        if not steps:
            return None
        drop = self.rng.choice(steps)
        return "\n".join(line for i, line in enumerate(self.lines) if i != drop)

    def unsupported_conclusion(self) -> str | None:
        last = self.lines[-1]
        numbers = list(NUMBER.finditer(last))
        if not numbers:
            return None
        target = numbers[-1]
        wrong = format_value(self._wrong(parse_number(target.group(0))))
        return "\n".join([*self.lines[:-1], last[: target.start()] + wrong + last[target.end() :]])

    def premature_answer(self) -> str | None:
        final = parse_number(self.answer) if NUMBER.fullmatch(self.answer) else None
        stops = list(range(len(self.lines) - 1))
        self.rng.shuffle(stops)
        for stop in stops:
            numbers = NUMBER.findall(self.lines[stop])
            if not numbers:
                continue
            value = parse_number(numbers[-1])
            if final is not None and _same(value, final):
                continue
            return "\n".join([*self.lines[: stop + 1], f"So the answer is {format_value(value)}."])
        return None

    def answer_leaked(self) -> str | None:
        return f"The answer is {self.answer}."

    def irrelevant_detour(self) -> str | None:
        numbers = sorted({parse_number(n) for n in NUMBER.findall(self.question)})
        if len(numbers) < 2:
            numbers = sorted({parse_number(n) for line in self.lines for n in NUMBER.findall(line)})
        if len(numbers) < 2:
            return None
        a, b = self.rng.sample(numbers, 2)
        op = self.rng.choice(("+", "*"))
        c = a + b if op == "+" else a * b
        detour = self.rng.choice(DETOURS).format(
            a=format_value(a), op=op, b=format_value(b), c=format_value(c)
        )
        lines = list(self.lines)
        lines.insert(self.rng.randrange(len(lines)), detour)
        return "\n".join(lines)


def gsm8k_negatives(
    question: str, solution: str, answer: str, rng: random.Random, kinds: Sequence[str] = KINDS
) -> list[tuple[str, str]]:
    """(kind, reasoning) for each applicable kind, distinct from the positive and from each other."""
    perturber = GSM8KPerturber(question, solution, answer, rng)
    positive = "\n".join(perturber.lines)
    seen = {positive}
    negatives = []
    for kind in kinds:
        reasoning = getattr(perturber, kind)()
        if reasoning is None or reasoning in seen:
            continue
        seen.add(reasoning)
        negatives.append((kind, reasoning))
    return negatives
