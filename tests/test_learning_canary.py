"""The learning canary (slow tier): a short seeded GRPO run whose outcome reward must rise.

`experiment=learning_canary`: a smaller bootstrap than the default, then 60 steps of exec_only at lr 1e-3
on the same 8 training problems. Measured (docs/learning.md, first 5 steps -> last 10): seeds 0 / 1 / 2 of
the intact code +0.112 / +0.038 / +0.156 (every seed ends at 0.244-0.250); the same seed-0 run with the
advantage's sign flipped +0.019, with the completion mask shifted one token late +0.003. The test runs
seed 0 on one thread (deterministic on this machine type) with the margin between the two.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST, LAST = 5, 10  # steps averaged at the start and at the end
MARGIN = 0.06  # mean reward of the last LAST steps minus the first FIRST


@pytest.mark.slow
def test_grpo_raises_the_outcome_reward(tmp_path):
    env = {
        **os.environ,
        "PLANLIFT_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "experiment=learning_canary",
        "torch_threads=1",
        "seed=0",
        f"hydra.run.dir={run_dir}",
        "callbacks.rich_progress_bar=null",
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    from tbparse import SummaryReader

    frame = SummaryReader(str(run_dir / "tensorboard")).scalars
    rewards = frame[frame.tag == "train/reward/final"].sort_values("step").value.tolist()
    assert len(rewards) == 60
    first, last = sum(rewards[:FIRST]) / FIRST, sum(rewards[-LAST:]) / LAST
    assert last - first >= MARGIN, f"reward {first:.3f} -> {last:.3f}: GRPO did not raise it by {MARGIN}"
