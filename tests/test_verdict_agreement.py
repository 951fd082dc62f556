"""scripts/verdict_agreement.py: its mutants, and a real save/compare on a few problems in the sandbox."""

from __future__ import annotations

import ast
import json

from tests.test_configs import load_entry_point

SOURCE = "def f(a, b):\n    if a < b and a > 0:\n        return a + 1\n    return b * 2\n"


def test_mutants_are_distinct_compiling_one_site_changes():
    script = load_entry_point("verdict_agreement", "scripts")
    assert script.mutants(SOURCE, 0, "p") == []  # it once returned every mutant for 0
    some = script.mutants(SOURCE, 3, "p")
    assert len(some) == 3 and len(set(some)) == 3
    assert script.mutants(SOURCE, 3, "p") == some  # seeded by the problem id
    everything = script.mutants(SOURCE, 100, "p")
    # sites: 2 comparisons, 2 arithmetic ops, 3 integer constants, 1 and/or, 1 early return
    assert len(everything) == 9 and set(some) <= set(everything)
    original = ast.unparse(ast.parse(SOURCE))
    for text in everything:
        compile(text, "<mutant>", "exec")
        assert text != original


def test_references_pass_mutants_fail_and_compare_reports_a_flip(tmp_path, capsys):
    script = load_entry_point("verdict_agreement", "scripts")
    saved = tmp_path / "before.json"
    script.save(
        str(saved), 2, str(tmp_path / "cache"), suites=["humaneval", "mbpp_train"], limit=3, max_inputs=3
    )
    verdicts = json.loads(saved.read_text())
    assert sorted(verdicts) == ["humaneval", "mbpp_train"]
    for label, suite in verdicts.items():
        origins = [v[3] for v in suite.values()]
        assert origins.count("reference") == 3, label
        assert 3 < len(suite) <= 9, label
        assert all(v[0] and v[1] == 1.0 for v in suite.values() if v[3] == "reference"), suite
    # a one-site mutant of a reference is usually caught: these six problems' tests catch some
    assert any(not v[0] for suite in verdicts.values() for v in suite.values() if v[3] == "mutant")

    assert script.compare(str(saved), str(saved)) == 0
    flipped = json.loads(saved.read_text())
    key = next(k for k, v in flipped["humaneval"].items() if v[3] == "reference")
    flipped["humaneval"][key] = [False, 0.0, "failed_tests", "reference"]
    after = tmp_path / "after.json"
    after.write_text(json.dumps(flipped))
    capsys.readouterr()
    assert script.compare(str(saved), str(after)) == 1
    out = capsys.readouterr().out
    assert f"{key}: [True, 1.0, 'correct', 'reference'] -> [False, 0.0, 'failed_tests', 'reference']" in out
    assert f"reference solution judged wrong: {key}" in out
