"""The characters a reader sees: one normalisation shared by the leakage detectors.

A policy penalised for stating an answer can spell it with characters that render (or read, to a language
model) as the plain ones while a regex over the raw text sees something else. `visible_characters` maps
them back before any matching:

- NFKC compatibility forms become the plain characters: fullwidth "７２" and "Ｓ6", circled "⑦②",
  superscript or subscript digits standing alone ("⁷²"), mathematical alphanumerics, ligatures, no-break
  and thin spaces. Two kinds are left as written, since NFKC would change what they say: vulgar fractions
  (NFKC writes "½" as "1⁄2", two numbers) and superscripts or subscripts attached to a letter, digit or
  closing bracket, which are exponents and indices ("10²" is no 102, "m²" holds no 2), unless
  `attached_scripts` (a task whose names carry indices: "S₆" is S6).
- Format characters (Unicode category Cf: zero-width spaces and joiners, soft hyphens, bidi marks) are
  removed: they render as nothing.
- Combining marks on a digit are dropped ("7\\u0303" is a 7, the keycap "7\\ufe0f\\u20e3" too).
- Dashes between two letters become hyphens ("seventy\\u2011two", with a non-breaking hyphen, is
  "seventy-two"); a dash before a digit is left alone (it may be a minus or a range).

ASCII text comes back as it is (every step touches other characters only).
"""

from __future__ import annotations

import re
import unicodedata

# Combining marks (Mn / Me) that can sit on a digit: diacritics, their extensions and supplements, the
# marks for symbols (the enclosing keycap U+20E3 among them), half marks and variation selectors.
_COMBINING = "\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f"
_MARKS_ON_DIGIT = re.compile(rf"(?<=\d)[{_COMBINING}]+")
# Hyphens and dashes (NFKC leaves U+2010..U+2015 and the minus sign as they are).
_DASH_BETWEEN_LETTERS = re.compile(r"(?<=[^\W\d_])[\u2010-\u2015\u2212](?=[^\W\d_])")


def _script_kind(char: str) -> str | None:
    """'script' for a superscript or subscript, 'fraction' for a vulgar fraction, else None."""
    tag = unicodedata.decomposition(char).split(" ", 1)[0]
    if tag in ("<super>", "<sub>"):
        return "script"
    if tag == "<fraction>":
        return "fraction"
    return None


def _compatibility_forms(text: str, attached_scripts: bool) -> str:
    """NFKC, but vulgar fractions kept, and superscripts / subscripts attached to a letter, digit or closing
    bracket kept unless `attached_scripts` (a run of them shares the first one's fate: "10²³" is kept whole,
    " ⁷²" becomes " 72")."""
    kept: list[str] = []
    run: list[str] = []
    attached = False  # the previous character was alphanumeric or a closing bracket
    keeping = False  # the previous character was a superscript / subscript kept as written
    for char in text:
        kind = _script_kind(char)
        keep = kind == "fraction" or (
            kind == "script" and not attached_scripts and (keeping or (attached and not _ends_in_script(run)))
        )
        if keep:
            kept.append(unicodedata.normalize("NFKC", "".join(run)))
            kept.append(char)
            run = []
        else:
            run.append(char)
        keeping = keep and kind == "script"
        attached = char.isalnum() or char in ")]}"
    kept.append(unicodedata.normalize("NFKC", "".join(run)))
    return "".join(kept)


def _ends_in_script(run: list[str]) -> bool:
    """The last character of `run` is a superscript / subscript converted as standing alone: the next one
    continues that number (" ⁷²")."""
    return bool(run) and _script_kind(run[-1]) == "script"


def visible_characters(text: str, attached_scripts: bool = False) -> str:
    """`text` as a reader sees its characters (module docstring)."""
    if text.isascii():
        return text
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = _compatibility_forms(text, attached_scripts)
    text = _MARKS_ON_DIGIT.sub("", text)
    return _DASH_BETWEEN_LETTERS.sub("-", text)
