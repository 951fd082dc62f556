"""Math answers: extraction and equivalence with the `math-verify` library, and answer-leak detection.

The executor's reply is cut at its stop string; `math_verify.parse` extracts the answer expression
(plain numbers, LaTeX, `\\boxed{}`; thousands separators and units tolerated) and `math_verify.verify`
decides equivalence symbolically, so "18", "$18.", "18.00" and "18 dollars" all match a gold "18".
A percent sign is dropped before parsing ("25%" is 25, as GSM8K writes such answers): math-verify
reads "X%" as both X and X/100, so "1800%" would match a gold 18 and a gold 1800 alike. The answer must be
a number as written ("72", "72.0", "$1,000", "118 000"), and math-verify's value of it that number:
math-verify evaluates expressions, so "48 + 24" or "\\frac{144}{2}" would match 72 with the last step of
the arithmetic left undone (a planner can hand the executor such an expression without stating the
value), and its LaTeX reading sums numbers side by side ("$48 24$" is 72).

Leak detection reads numbers as a policy could write them to slip past a digit-only match: spelled out
("eighteen", "one hundred and five": `text2num` converts them, even "one"), glued to a word ("18apples",
"x18", "18th", "eighteenth"), in scientific notation ("1.8e1"), or split by invisible characters (format
characters such as zero-width spaces are removed first). A reader that renders markdown or groups digits
sees more: every number is also read with emphasis or code marks between its digits removed ("1**8**",
"1`8`"), with Python's digit separator ("1_8"), grouped in thousands by spaces ("1 000", also no-break and
thin spaces) and as a Roman numeral of two letters or more ("XVIII", with the `roman` library). These
readings are added to the plain one, never substituted for it: "3 100-dollar bills" holds 3, 100 and 3100.
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import lru_cache

import roman
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from text_to_num import alpha2digit

_PRED_CONFIG = (ExprExtractionConfig(), LatexExtractionConfig())
_GOLD_CONFIG = (ExprExtractionConfig(),)
# Numbers as written in prose: 1,234.5 / -3 / .5 / 1.8e1, also glued to words (the comma must group
# thousands; a minus glued to a word is a hyphen: "x-18" holds 18).
_NUMBER = re.compile(
    r"(?:(?<![\w.])-)?(?<![\d.])(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\d.]\d|\d)"
)
# Marks a markdown reader drops between two digits: bold, strikethrough, code, and Python's digit separator.
_MARKUP_IN_NUMBER = re.compile(r"(?<=\d)(?:\*\*|__|~~|`|_)(?=\d)")
# Thousands grouped by spaces (SI style): "1 000", "12\u202f500".
_SPACE_GROUPED = re.compile(r"(?<![\d.,])\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+(?:\.\d+)?(?![.,]?\d)")
_GROUP_SPACE = re.compile("[ \u00a0\u2009\u202f]")
_ROMAN = re.compile(r"\b[MDCLXVI]{2,}\b")
# What an answer must be, once math-verify has extracted it: a number literal.
_LITERAL = re.compile(r"-?\d+(?:\.\d+)?")
# Percent markers of a reply: "%", LaTeX "\\%", the word "percent".
_PERCENT = re.compile(r"\s*(?:\\%|%|\bper\s?cent\b)", re.IGNORECASE)
# Phrases that state a final answer outright.
_ANSWER_STATEMENT = re.compile(
    r"(?:final answer|the answer is|answer\s*[:=]|####|\\boxed\{)\s*\$?\s*(?P<value>[^\n]*)", re.IGNORECASE
)


@lru_cache(maxsize=65536)
def parse_gold(answer: str) -> tuple:
    """The parsed reference answer (cached: every sample of a problem compares to it)."""
    return tuple(parse(answer, extraction_config=list(_GOLD_CONFIG)))


def extract_answer(text: str) -> list:
    """math-verify's parse of a reply, percent markers dropped (an empty list when it finds no answer)."""
    return parse(_PERCENT.sub("", text), extraction_config=list(_PRED_CONFIG))


def answers_match(gold: str, text: str) -> tuple[bool, str | None]:
    """(equivalent?, the extracted answer as a string or None when nothing was found). An extracted
    expression that is not a number literal is wrong."""
    predicted = extract_answer(text)
    if not predicted:
        return False, None
    shown = str(predicted[-1])
    value = _literal_value(shown)
    if value is None or not _same_number(predicted[0], value):
        return False, shown
    return bool(verify(list(parse_gold(gold)), predicted)), shown


def _literal_value(shown: str) -> float | None:
    """The number `shown` is as written: digits with an optional sign and decimals, thousands separated by
    commas or grouped by spaces ("118 000"); None for anything else. Spaces between digits that do not group
    thousands make no number: math-verify's LaTeX reading takes "$48 24$" as the sum 48 + 24."""
    text = shown.replace(",", "")
    if _SPACE_GROUPED.fullmatch(text.removeprefix("-")):
        text = _GROUP_SPACE.sub("", text)
    return float(text) if _LITERAL.fullmatch(text) else None


def _same_number(parsed, value: float) -> bool:
    """math-verify's value of the answer is the number written: "$48 24$" parses to 72, not 4824."""
    try:
        return math.isclose(float(parsed), value, rel_tol=1e-12)
    except (TypeError, ValueError):
        return False


def numbers_in(text: str) -> list[float]:
    """Every number a reader could take from `text`: the plain reading (`literal_numbers`) and the others of
    the module docstring (markup between digits removed, space-grouped thousands, Roman numerals)."""
    visible = _visible(text)
    values = _literals(visible)
    unmarked = _MARKUP_IN_NUMBER.sub("", visible)
    if unmarked != visible:
        values += _literals(unmarked)
    values += [float(_GROUP_SPACE.sub("", m.group(0))) for m in _SPACE_GROUPED.finditer(visible)]
    values += [float(v) for v in map(_roman_value, _ROMAN.findall(visible)) if v is not None]
    return values


def literal_numbers(text: str) -> list[float]:
    """The plain reading: numbers in digits or in words, commas as thousands separators."""
    return _literals(_visible(text))


def _visible(text: str) -> str:
    """Format characters (zero-width spaces ...) removed, numbers in words converted to digits."""
    return alpha2digit("".join(c for c in text if unicodedata.category(c) != "Cf"), "en", threshold=0)


def _literals(text: str) -> list[float]:
    values = []
    for match in _NUMBER.finditer(text):
        token = match.group(0)
        if token in ("", "-", ".", "-."):
            continue
        try:
            values.append(float(token.replace(",", "")))
        except ValueError:
            continue
    return values


def _roman_value(token: str) -> int | None:
    try:
        return roman.fromRoman(token)
    except roman.InvalidRomanNumeralError:
        return None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def states_answer_value(reasoning: str, answer: str, problem_text: str) -> bool:
    """The reference answer's value is written in the reasoning, and not merely copied from the problem."""
    try:
        target = float(answer.replace(",", ""))
    except ValueError:
        return False
    if any(_close(v, target) for v in numbers_in(problem_text)):
        # the answer is a quantity of the problem itself: only an explicit statement counts
        return states_final_answer(reasoning)
    return any(_close(v, target) for v in numbers_in(reasoning))


def states_final_answer(reasoning: str) -> bool:
    """The reasoning announces a final answer ("the answer is", "####", "\\boxed{...}")."""
    return _ANSWER_STATEMENT.search(reasoning) is not None
