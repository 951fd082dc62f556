"""scripts/executor_dependence.py (the diagnostic of docs/learning.md, section 1) on the debug preset."""

from __future__ import annotations

import torch

from tests.test_configs import load_entry_point


def test_the_report_is_a_function_of_the_config(tmp_path):
    """It samples planner reasonings and executor answers: seeded by `seed`, not by the process's stream."""
    script = load_entry_point("executor_dependence", "scripts")
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
