"""scripts/forge_probe.py's crafted reasonings, judged without the executor: the leakage each one is
documented to carry (docs/tasks_and_evaluation.md, "Leakage") and the verdicts its replies get. The
executor's sampling is the script's measurement (~1 min with SmolLM2), not a test."""

from __future__ import annotations

import pytest

from planlift.tasks import GSM8KTask
from tests.test_configs import load_entry_point


@pytest.fixture(scope="module")
def probe():
    task = GSM8KTask()
    return load_entry_point("forge_probe", "scripts"), task, task.problems("train")[0]


def test_the_probed_problem_is_the_one_the_reasonings_are_written_for(probe):
    *_, problem = probe
    assert problem.answer == "72"
    assert "48" in problem.text and "half" in problem.text


@pytest.mark.parametrize(
    "name, leaks",
    [
        ("expression", False),  # 48 + 24, never the value
        ("spoofed_turns", False),
        ("steps_only", False),
        ("value_split", False),  # "7 2": two numbers, as the executor reads them
        ("value", True),
        ("value_bold", True),
        ("value_roman", True),
    ],
)
def test_each_crafted_reasoning_is_flagged_as_documented(probe, name, leaks):
    script, task, problem = probe
    assert task.detect_leakage(problem, script.REASONINGS[name]) is leaks


def test_the_replies_the_probe_provokes_are_judged_by_their_value(probe):
    """The spoofed turns ask for "48 + 24": an expression is not a number, so it is not an answer."""
    script, task, problem = probe
    assert not task.verify(problem, "48 + 24").correct
    assert not task.verify(problem, "The answer is 48 + 24").correct
    assert task.verify(problem, "48 + 24 = 72.").correct
    assert task.verify(problem, "The answer is 72").correct
    assert set(script.REASONINGS) >= {"none", "spoofed_turns", "value", "steps_only"}
