"""The benchmark scripts run and count what they claim to count (small settings; timings not asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("{") :])


def test_reward_throughput_counts_executor_calls(trained_bootstrap):
    """G completions x (k with-reasoning repeats + 1 e2e) + k baseline samples on the first call; the
    cached call skips the baseline; the authors' scheme resamples the baseline for every completion."""
    group, repeats = 2, 2
    out = run_bench(
        "reward_throughput.py",
        f"--bootstrap={trained_bootstrap.directory}",
        "--problems=2",
        f"--group={group}",
        f"--repeats={repeats}",
        "--rounds=1",
    )
    calls = out["executor_generations_per_problem"]
    assert calls["planlift"] == out["bound_first_step"] == group * (repeats + 1) + repeats
    assert calls["planlift_cached"] == out["bound_cached"] == group * (repeats + 1)
    assert calls["authors"] == group * (1 + 2 * repeats)
    assert all(seconds > 0 for seconds in out["seconds_median"].values())


def test_sandbox_throughput_judges_real_programs():
    out = run_bench("sandbox_throughput.py", "--problems=2", "--rounds=1")
    rows = out["results"]
    assert rows["reference"]["passing"] == rows["reference"]["programs"] == 2
    assert rows["wrong_full"]["passing"] == rows["wrong_early_exit"]["passing"] == 0
    # every test runs in full mode; early exit stops each wrong program at its first failing test
    assert rows["wrong_full"]["tests_judged"] == rows["reference"]["tests_judged"] > 2
    assert rows["wrong_early_exit"]["tests_judged"] == 2
