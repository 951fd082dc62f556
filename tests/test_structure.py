"""The package's structure, protected: no import circles, a light reward import, loaders that know
nothing of the bootstrap, and one place that calls the verifier (planlift.judging)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.test_configs import load_entry_point

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "planlift"


def structure_report():
    return load_entry_point("structure_report", "scripts")


def test_no_import_circles():
    report = structure_report()
    assert report.circles(report.import_graph()) == []


def test_the_import_graph_sees_a_circle_when_there_is_one(tmp_path):
    """The check above can fail: two modules importing each other form a circle."""
    report = structure_report()
    graph = {"planlift.a": {"planlift.b"}, "planlift.b": {"planlift.a"}, "planlift.c": {"planlift.a"}}
    assert report.circles(graph) == [["planlift.a", "planlift.b"]]


def test_importing_the_reward_loads_neither_vllm_nor_the_sandbox():
    code = (
        "import sys, planlift.rewards.grounded; "
        "print(' '.join(m for m in sys.modules if m.startswith('planlift') or m == 'vllm'))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in loaded if m.startswith(("planlift.executors.vllm", "planlift.sandbox", "vllm"))]
    assert not [
        m for m in loaded if m.startswith(("planlift.rubric_rm", "planlift.rm_groups", "planlift.bootstrap"))
    ]


def test_loaders_and_backends_never_import_the_bootstrap():
    graph = structure_report().import_graph()
    loaders = [
        "planlift.models.loading",
        "planlift.models.policy",
        "planlift.executors.hf",
        "planlift.executors.vllm",
        "planlift.executors.openai",
        "planlift.rubric_rm.model",
        "planlift.rm.learned",
    ]
    assert {name: graph[name] & {"planlift.bootstrap", "planlift.bootstrap.stage"} for name in loaders} == {
        name: set() for name in loaders
    }


def test_only_the_judging_module_calls_the_verifier():
    """Executor output -> verdict happens in planlift.judging (tasks define verify / verify_batch)."""
    callers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"\.verify(_batch)?\(", path.read_text()) and not path.is_relative_to(PACKAGE / "tasks")
    )
    assert callers == ["judging.py"]
