"""Math answers: extraction and equivalence with the `math-verify` library, and answer-leak detection.

The executor's reply is cut at its stop string; `math_verify.parse` extracts the answer expression
(plain numbers, LaTeX, `\\boxed{}`; thousands separators and units tolerated) and `math_verify.verify`
decides equivalence symbolically, so "18", "$18.", "18.00" and "18 dollars" all match a gold "18".
A percent sign is dropped before parsing ("25%" is 25, as GSM8K writes such answers): math-verify
reads "X%" as both X and X/100, so "1800%" would match a gold 18 and a gold 1800 alike. The answer must be
a number as written ("72", "72.0", "$1,000", "118 000"), and math-verify's value of it that number:
math-verify evaluates expressions, so "48 + 24" or "\\frac{144}{2}" would match 72 with the last step of
the arithmetic left undone (a planner can hand the executor such an expression without stating the
value), and its LaTeX reading sums numbers side by side ("$48 24$" is 72). Markdown around a number is
dropped ("**72**", "`72`"). A hedge is wrong: math-verify takes the last of "70 or 72", "70 to 72" and
"between 70 and 72", so the line of the reply's last number must not offer alternatives or a range.

Leak detection reads numbers as a policy could write them to slip past a digit-only match: spelled out
("eighteen", "one hundred and five": `text2num` converts them, even "one"; glued number words such as
"seventytwo" are split first), glued to a word ("18apples", "x18", "18th", "eighteenth"), in scientific
notation ("1.8e1"), or in characters that read as others (`planlift.tasks.visible`: fullwidth, circled
and standalone superscript digits, zero-width and other format characters, combining marks on a digit,
dashes such as U+2011 between number words). A reader that renders markdown, HTML or LaTeX, or groups
digits, sees more: every number is also read with the marks between its digits removed (emphasis and code
marks "1**8**", "1`8`", a one-star emphasis span that closes or opens a number "1*8*" / "*1*8" but not a
product "2*2*x", HTML tags and comments "1<b></b>8", "1<!-- -->8", LaTeX's zero-width "1\\!8" and
"1{}8"), with Python's digit separator ("1_8"), grouped in thousands by spaces ("1 000", also no-break,
thin and LaTeX "1\\,000" spaces), as a Python integer literal in hex, binary or octal ("0x12"), and as a
Roman numeral: upper case of two letters or more ("XVIII", with the `roman` library), lower case of three
or more ("xviii"; two lower-case letters are units and words: cm, ml, mm, xl), neither a word or
abbreviation (mix, div, cli) nor a list marker ("iii)", "(iv)"). These readings are added to the plain one,
never substituted for it: "3 100-dollar bills" holds 3, 100 and 3100.

When the answer is a quantity the problem states, a value match cannot tell a leak from a copy of the
problem, so only a statement counts: one of `states_final_answer`, or the answer's value given as a result
("Result: 5", "Total = 5", "so the sum is 5"; not "a total of 5", nor "Total = 5 + 3", an operand).
"""

from __future__ import annotations

import contextlib
import math
import re
from functools import lru_cache

import roman
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from text_to_num import alpha2digit

from planlift.tasks.visible import visible_characters

_PRED_CONFIG = (ExprExtractionConfig(), LatexExtractionConfig())
_GOLD_CONFIG = (ExprExtractionConfig(),)
# Numbers as written in prose: 1,234.5 / -3 / .5 / 1.8e1, also glued to words (the comma must group
# thousands; a minus glued to a word is a hyphen: "x-18" holds 18).
_NUMBER = re.compile(
    r"(?:(?<![\w.])-)?(?<![\d.])(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\d.]\d|\d)"
)
# Marks a reader drops between two digits: markdown bold, strikethrough and code, Python's digit separator,
# HTML tags (attributes with values: "3<x and y>4" is no tag) and comments, LaTeX's negative thin space and
# empty group.
# Possessive repeats, and no two branches that can read the same text ("__" is two "_"; an unquoted value
# holds no quote): a failed match is then given up in linear time, not retried in every split.
_HTML_TAG = r"</?[A-Za-z][\w:-]*(?:\s+[\w:-]+\s*=\s*(?:\"[^\"<>]*\"|'[^'<>]*'|[^\s<>\"'=`]+))*+\s*/?>"
_MARKUP_IN_NUMBER = re.compile(
    rf"(?<=\d)(?:\*\*|~~|`|_|<!--[\s\S]{{0,200}}?-->|{_HTML_TAG}|\\!|\{{\}})++(?=\d)"
)
# A one-star emphasis span of digits that continues a number ("7*2*") or is continued by one ("*7*2"): a
# product ("2*2*x", "3*4*5", "100*100*.5") has an operand on both sides.
_EMPHASIS_AFTER_DIGIT = re.compile(r"(?<=\d)\*(\d+)\*(?=[\s,;:!?)]|[.](?!\d)|$)")
_EMPHASIS_BEFORE_DIGIT = re.compile(r"(?:^|(?<=[\s(]))\*(\d+)\*(?=\d)", re.MULTILINE)
# LaTeX spaces between digits: a thin space groups thousands ("1\\,000").
_LATEX_SPACE = re.compile(r"(?<=\d)\\[,:;](?=\d)")
# Thousands grouped by spaces (SI style): "1 000", "12\u202f500".
_SPACE_GROUPED = re.compile(r"(?<![\d.,])\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+(?:\.\d+)?(?![.,]?\d)")
_GROUP_SPACE = re.compile("[ \u00a0\u2009\u202f]")
_DIGIT = re.compile(r"\d")
# Python integer literals in other bases (two digits at least: "0x5" may be 0 times 5).
_BASE_PREFIXED = re.compile(r"\b0(?:[xX][0-9a-fA-F]{2,}|[bB][01]{2,}|[oO][0-7]{2,})\b")
_ROMAN = re.compile(r"\b[MDCLXVI]{2,}\b")
_LOWER_ROMAN = re.compile(r"\b[mdclxvi]{3,}\b")
# Lower-case letters that are valid Roman numerals and words or abbreviations.
_ROMAN_WORDS = frozenset({"mix", "div", "dix", "cli", "civ", "mmm", "xxx", "ccc", "mcd", "mdx", "dcl", "mcm"})
# A list marker: "iii)" or "iv." opening a line, "(vii)" anywhere.
_LIST_MARKER = re.compile(
    r"(?:^[ \t]*\(?|\()(?P<bracketed>[mdclxvi]+)\)|^[ \t]*(?P<dotted>[mdclxvi]+)\.(?=\s)", re.MULTILINE
)
# Number words written as one word ("seventytwo", "onehundredfive"): split before `text2num` reads them.
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
    "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million",
    "billion", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth",
    "nineteenth", "twentieth", "thirtieth", "fortieth", "fiftieth", "sixtieth", "seventieth", "eightieth",
    "ninetieth", "hundredth", "thousandth", "millionth",
)  # fmt: skip
_NUMBER_WORD = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
_GLUED_NUMBER_WORDS = re.compile(rf"\b(?:{_NUMBER_WORD})(?:{_NUMBER_WORD})+\b", re.IGNORECASE)
# What an answer must be, once math-verify has extracted it: a number literal.
_LITERAL = re.compile(r"-?\d+(?:\.\d+)?")
# Percent markers of a reply: "%", LaTeX "\\%", the word "percent".
_PERCENT = re.compile(r"\s*(?:\\%|%|\bper\s?cent\b)", re.IGNORECASE)
# A run of 8 or more spaces or line breaks: math-verify's parse and the percent pattern take time quadratic
# in a run's length (11.7 s on a reply of 20,000 spaces); two of them read the same.
_LONG_SPACE = re.compile(r"\s{8,}")
# Markdown around a number: "**72**", "*72*", "__72__", "`72`" (math-verify finds no answer in a code span
# or in one-star emphasis, and shows "**72**" as "72**"); not a product ("2*72*3") or a name ("x_72_").
_MARKDOWN_AROUND_NUMBER = re.compile(
    r"(?<![\w*`])(\*\*|__|\*|_|`)(?P<number>\$?-?\d[\d,]*(?:\.\d+)?)\1(?![\w*`])"
)
# A number in quotes: '"72"', "“72”", "'72'" (math-verify found no answer in them).
_QUOTED_NUMBER = re.compile(
    r"(?<![\w\"'\u201c\u2018])[\"'\u201c\u2018](?P<number>\$?-?\d[\d,]*(?:\.\d+)?)[\"'\u201d\u2019](?![\w\"'])"
)
# Before a number: LaTeX's escaped dollar ("\\$18": no answer found) and a minus before the dollar ("-$5").
_ESCAPED_DOLLAR = re.compile(r"\\\$(?=\s*\d)")
_MINUS_DOLLAR = re.compile(r"(?<![\w.])-\s*\$(?=\d)")
# A number alone in brackets: "(72)", "[72]" (math-verify finds no answer in them); not a call or an index
# ("f(72)", "a[72]") and not brackets inside a longer term ("(72)x").
_BRACKETED_NUMBER = re.compile(
    r"(?<![\w)\]])(?:\((?P<round>\$?-?\d[\d,]*(?:\.\d+)?)\)|\[(?P<square>\$?-?\d[\d,]*(?:\.\d+)?)\])(?![\w(\[])"
)
# An aside in brackets after a number and a space: "72 (3 boxes)", "$72 (3 × 24)", "18 (= 9 * 2)" (math-verify
# read "72 (3" or took the aside's last number). It holds a word, "×" or "=": "2 (3 + 4)" may be a product,
# and "72 (24)" is two numbers.
_ASIDE_AFTER_NUMBER = re.compile(r"(?<=\d)[ \t]+\((?=[^()\n]{0,200}?(?:[^\W\d_]|[\u00d7=]))[^()\n]{1,200}\)")
# A hedge offers several numbers, on the line of the reply's last number (math-verify takes the last, or
# the first before an aside). Every run of digits, letters or spaces is read by one possessive token or a
# bounded repeat: a failed match is given up in linear time.
_AMOUNT = r"(?:\$\s*+)?+-?\d++(?:,\d{3})*+(?:\.\d++)?+%?+"
_WORDS = r"(?:\s++[A-Za-z]++)"
_ALTERNATIVE = r"\b(?:or|nor|maybe|perhaps|possibly|probably|alternatively|otherwise|either)\b"
_DASH = "[\u2010-\u2015]"  # hyphens, figure dash, en and em dashes (not "-": 18-2 is 16)
_HEDGE = re.compile(
    # a range: "18 to 20", "18 apples to 20", "18–20"
    rf"(?<![\w.,]){_AMOUNT}{_WORDS}{{0,2}}\s*+,?+\s*+(?:\bto\b|{_DASH})\s*+{_AMOUNT}"
    # alternatives: "18 or 20", "18 apples, or 20", "18, maybe 20"; not an operand ("($18) on Monday or
    # $9+$18 = $27", "(240) or 1200/240 = 5": GSM8K's worked solutions)
    rf"|(?<![\w.,]){_AMOUNT}{_WORDS}{{0,2}}\s*+,?+\s*+{_ALTERNATIVE}\s*+{_AMOUNT}(?!\s*+[-+*/\u00d7\u00f7^=])"
    rf"|\bbetween\s++{_AMOUNT}{_WORDS}{{0,2}}\s++and\s++{_AMOUNT}",
    re.IGNORECASE,
)
# Before the line's last number, which math-verify takes: another number and an alternative with more words
# between ("18 big red apples, or maybe 20", "18. Or 20"), or a list separator ("18 and 20", "18 | 20",
# "18 vs 20", "18 -> 20", "18, 20", "[18, 20", "18 20"; not "/": "84/12 = 7" is a division). Read only
# before the last number: working before it ("5 -3 = 2", "8, 12 - 8 = 4", "3 and $1.00 ... = $9") is no hedge.
_ALTERNATIVE_BEFORE_LAST = re.compile(
    rf"(?<![\w.,]){_AMOUNT}{_WORDS}{{0,6}}\s*+[,.;]?+\s*+{_ALTERNATIVE}{_WORDS}{{0,2}}\s*+\Z", re.IGNORECASE
)
_LIST_BEFORE_LAST = re.compile(
    rf"(?<![\w.,]){_AMOUNT}\s*+(?:(?:[|&~]|->|=>|\u2192|\band\b|\bvs\b\.?+|\bversus\b|\bthrough\b|\bthru\b)"
    rf"|(?P<loose>[,;]|(?<=\s)))\s*+\Z",
    re.IGNORECASE,
)
_LAST_AMOUNT = re.compile(rf"(?<![\w.,]){_AMOUNT}(?!.*\d)")
# Words after the last number make a comma or a space no list: "18, 9 eggs at $2 each" explains the 18,
# "15 4-packs" counts packs.
_WORD_AFTER = re.compile(r"\s*+[-A-Za-z]")
# An aside after a number that holds another number and a word of doubt, correction or condition: "18 (or
# 20)", "18 [maybe 20]", "18 (actually 20)", "18 (no, 20)", "18 (20 if she sells all)"; not "18 (not 20)".
_ASIDE = re.compile(rf"(?<![\w.,]){_AMOUNT}\s*+[(\[](?P<inside>[^()\[\]\n]{{0,200}})[)\]]")
_DOUBT = re.compile(
    rf"{_ALTERNATIVE}|\b(?:actually|correction|wait|no|rather|instead|oops|sorry|mean|if|unless|assuming|else)\b",
    re.IGNORECASE,
)
# What introduces a stated value: ":", "=", "->", "=>" and their arrows.
_GIVES = r"(?:[:=]|->|=>|\u2192|\u21d2)"
# Phrases that state a final answer outright.
_ANSWER_STATEMENT = re.compile(
    rf"(?:final answer|the answer is|answer\s*{_GIVES}|####|\\boxed\{{)\s*\$?\s*(?P<value>[^\n]*)",
    re.IGNORECASE,
)
# A value given as the result: "Result: 5", "Total = 5", "the sum is $5" (the number is not an operand of
# an expression: "Total = 5 + 3", "total = 5 kg + 3 kg").
_RESULT_STATEMENT = re.compile(
    r"\b(?:result|total|sum|overall|altogether|in all|solution|final)\b\s*"
    rf"(?:{_GIVES}|\bis\b|\bequals\b|\bcomes to\b)\s*\$?\s*"
    r"(?P<value>-?\d[\d,]*+(?:\.\d+)?)(?![\d.,]*\d)(?!\s*(?:[A-Za-z$%/]+\s*)?[-+*/x\u00d7\u00f7^]\s*\$?\d)",
    re.IGNORECASE,
)


@lru_cache(maxsize=65536)
def parse_gold(answer: str) -> tuple:
    """The parsed reference answer (cached: every sample of a problem compares to it)."""
    return tuple(parse(answer, extraction_config=list(_GOLD_CONFIG)))


def _plain_numbers(text: str) -> str:
    """The reply with long runs of spaces shortened, percent markers dropped, the minus sign read as "-",
    "\\$" and "-$" as "$" and "-", thousands grouped by spaces joined ("1\u00a0234": math-verify read 234), and
    markdown, quotes and brackets around numbers removed: what the hedge and the answer are read from."""
    text = _PERCENT.sub("", _LONG_SPACE.sub(_two_spaces, text)).replace("\u2212", "-")  # "54 − 37", "−18"
    text = _MINUS_DOLLAR.sub("-", _ESCAPED_DOLLAR.sub("$", text))
    text = _SPACE_GROUPED.sub(_ungrouped, text)
    for pattern in (_BRACKETED_NUMBER, _MARKDOWN_AROUND_NUMBER, _QUOTED_NUMBER, _BRACKETED_NUMBER):
        text = pattern.sub(_number_inside, text)  # also "**(72)**", "(**72**)"
    return text


def extract_answer(text: str) -> list:
    """math-verify's parse of a reply, percent markers, markdown and brackets around numbers, and asides
    after a number dropped (an empty list when it finds no answer)."""
    text = _ASIDE_AFTER_NUMBER.sub("", _plain_numbers(text))
    return parse(text, extraction_config=list(_PRED_CONFIG))


def _two_spaces(match: re.Match) -> str:
    return "\n\n" if "\n" in match[0] else "  "


def _number_inside(match: re.Match) -> str:
    return next(value for name, value in match.groupdict().items() if value is not None)


def hedges(text: str) -> bool:
    """Whether the line holding the reply's last number offers several numbers: alternatives or a range
    ("18 or 20", "18 to 20 dollars", "between 18 and 20", "18–20"), a list ("18 and 20", "[18, 20]", "18 |
    20"), or another number in an aside of doubt ("18 (or 20)", "18 (actually 20)"). math-verify takes one
    of them, so a hedge would be right whenever that choice is. Lines end at "\\n" only, as the executor's
    reply is cut, and are read with markdown and brackets around numbers removed ("**16** or **18**")."""
    lines = [line for line in _plain_numbers(text).split("\n") if any(c.isdigit() for c in line)]
    if not lines:
        return False
    line = lines[-1]  # spaces that group thousands are gone: "1 000" is one number, not a list
    if _HEDGE.search(line):
        return True
    if any(_DOUBT.search(inside) and _DIGIT.search(inside) for inside in _ASIDE.findall(line)):
        return True
    last = _LAST_AMOUNT.search(line)
    if last is None:
        return False
    before = line[: last.start()]
    if _ALTERNATIVE_BEFORE_LAST.search(before):
        return True
    listed = _LIST_BEFORE_LAST.search(before)
    return listed is not None and (listed["loose"] is None or not _WORD_AFTER.match(line, last.end()))


def _ungrouped(match: re.Match) -> str:
    return _GROUP_SPACE.sub("", match[0])


def answers_match(gold: str, text: str) -> tuple[bool, str | None]:
    """(equivalent?, the extracted answer as a string or None when nothing was found). An extracted
    expression that is not a number literal is wrong, and so is a hedge (`hedges`)."""
    predicted = extract_answer(text)
    if not predicted:
        return False, None
    shown = str(predicted[-1])
    if hedges(text):
        return False, shown
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
    unmarked = _unmarked(visible)
    if unmarked != visible:
        values += _literals(unmarked)
    for source in (visible,) if unmarked == visible else (visible, unmarked):
        values += [float(_GROUP_SPACE.sub("", m.group(0))) for m in _SPACE_GROUPED.finditer(source)]
    values += [_base_prefixed_value(m.group(0)) for m in _BASE_PREFIXED.finditer(visible)]
    values += [float(v) for v in map(_roman_value, _ROMAN.findall(visible)) if v is not None]
    values += [float(v) for v in map(_roman_value, _lower_romans(visible)) if v is not None]
    return values


def _unmarked(text: str) -> str:
    """`text` with the marks a markdown, HTML or LaTeX reader drops between digits removed, and LaTeX spaces
    between digits made thin spaces (module docstring)."""
    text = _EMPHASIS_AFTER_DIGIT.sub(r"\1", text)
    text = _EMPHASIS_BEFORE_DIGIT.sub(r"\1", text)
    text = _LATEX_SPACE.sub("\u2009", text)
    return _MARKUP_IN_NUMBER.sub("", text)


def _base_prefixed_value(literal: str) -> float:
    """The value of "0x48" / "0b101" / "0o17"; inf beyond a float's range (no answer is that large)."""
    value = int(literal, 0)
    return float(value) if value.bit_length() <= 1000 else math.inf


def _lower_romans(text: str) -> list[str]:
    """Lower-case Roman numerals of three letters or more that are neither words nor list markers."""
    markers = {
        m.start("bracketed") if m.group("bracketed") else m.start("dotted")
        for m in _LIST_MARKER.finditer(text)
    }
    return [
        m.group(0).upper()
        for m in _LOWER_ROMAN.finditer(text)
        if m.group(0) not in _ROMAN_WORDS and m.start() not in markers
    ]


def literal_numbers(text: str) -> list[float]:
    """The plain reading: numbers in digits or in words, commas as thousands separators."""
    return _literals(_visible(text))


def _visible(text: str) -> str:
    """Characters as a reader sees them (`visible_characters`), glued number words split, numbers in words
    converted to digits."""
    text = _GLUED_NUMBER_WORDS.sub(_split_number_words, visible_characters(text))
    return alpha2digit(text, "en", threshold=0)


def _split_number_words(match: re.Match) -> str:
    """ "seventytwo" -> "seventy two", "sixthousand" -> "six thousand": the split into the fewest number words
    (a longest-first split would read "sixth" and be left with "ousand"); the word as it is when none."""
    glued = match.group(0)
    lower = glued.lower()
    splits: list[list[str] | None] = [[]] + [None] * len(lower)
    for start in range(len(lower)):
        if splits[start] is None:
            continue
        for word in _NUMBER_WORDS:
            end = start + len(word)
            if lower.startswith(word, start) and (
                splits[end] is None or len(splits[start]) + 1 < len(splits[end])
            ):
                splits[end] = [*splits[start], glued[start:end]]
    return " ".join(splits[-1]) if splits[-1] else glued


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
        return states_final_answer(reasoning) or states_result(reasoning, target)
    return any(_close(v, target) for v in numbers_in(reasoning))


def states_final_answer(reasoning: str) -> bool:
    """The reasoning announces a final answer ("the answer is", "answer: ", "answer -> ", "####",
    "\\boxed{...}")."""
    return _ANSWER_STATEMENT.search(visible_characters(reasoning)) is not None


def states_result(reasoning: str, target: float) -> bool:
    """The reasoning gives `target` as its result ("Result: 5", "Total = 5", "the sum is five")."""
    for match in _RESULT_STATEMENT.finditer(_visible(reasoning)):
        with contextlib.suppress(ValueError):
            if _close(float(match.group("value").replace(",", "")), target):
                return True
    return False
