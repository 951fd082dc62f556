"""scripts/code_leakage.py: a reference program is flagged alike however it is dressed as a plan."""

from __future__ import annotations

import re
import sys

from tests.test_configs import load_entry_point


def test_every_dressing_of_the_references_is_flagged_alike(monkeypatch, capsys):
    script = load_entry_point("code_leakage", "scripts")
    monkeypatch.setattr(sys, "argv", ["code_leakage.py"])
    script.main()
    out = capsys.readouterr().out
    counts = re.findall(r"references, .* flagged (\d+)/(\d+)", out)
    assert (
        len(counts) == len(script.DRESSINGS) and len(set(counts)) == 1
    )  # bullets, Step k:, backticks = bare
    flagged, total = map(int, counts[0])
    # 1-2 line bodies too: a return and a statement that computes make a program
    assert total > 300 and flagged == total
    # a one-line body written into a sentence is the program too (returns_computed_value)
    sentences = re.findall(r"as sentences, .* flagged (\d+)/(\d+)", out)
    assert len(sentences) == len(script.SENTENCES) and len(set(sentences)) == 1
    flagged, total = map(int, sentences[0])
    assert total >= 9 and flagged == total  # 0/9 in each before returns_computed_value
    # the problems' own descriptions are not plans that leak code
    described = {
        name: tuple(map(int, counts))
        for name, *counts in re.findall(r"descriptions, (.*?) +flagged (\d+)/(\d+)", out)
    }
    assert described["MBPP train+validation"][0] == 0 and described["MBPP+"][0] == 0
    assert described["HumanEval"][0] <= 2  # 17 of 164 before English read as Python stopped counting
