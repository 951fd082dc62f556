"""scripts/executor_dependence.py (the diagnostic of docs/learning.md, section 1) on the debug preset."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_report_is_a_function_of_the_config(tmp_path):
    """It samples planner reasonings and executor answers: seeded by `seed`, not by the process's stream."""
    spec = importlib.util.spec_from_file_location(
        "executor_dependence", ROOT / "scripts" / "executor_dependence.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = [
        "debug=fast",
        "torch_threads=1",
        f"paths.cache_dir={tmp_path}",
        "problems=6",
        "reasonings=2",
        "executor_samples=3",
    ]
    reports = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        reports.append(script.main(args))
    assert reports[0] == reports[1]
    assert reports[0]["reasonings"] == 12 and reports[0]["executor_samples"] == 3
    assert abs(sum(reports[0]["sampled_kinds"].values()) - 1) < 1e-9
