"""kill -9 at a random point and resume from last.ckpt: the same run as one never interrupted.

Each case trains 12 GRPO steps (checkpoint every 2, validation every 4) in a real subprocess, SIGKILLs
it at a random point after its n-th checkpoint (during a step, a validation or a save), resumes it with
`auto_resume`, and compares with an uninterrupted run of the same seed: the `train/reward` and
`val/e2e_acc` series (the last value logged per step: steps after the checkpoint are logged twice) and
the final planner weights and optimizer state, bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = (
    "debug=fast",
    "torch_threads=1",
    "callbacks.rich_progress_bar=null",
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "callbacks.last_checkpoint.every_n_steps=2",
    "seed=3",
)


@pytest.fixture(scope="module")
def env(cache_dir):
    return {**os.environ, "PLANLIFT_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "src" / "train.py"), *SCHEDULE, f"hydra.run.dir={run_dir}", *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(command(run_dir, "auto_resume=false"), cwd=ROOT, env=env, check=True, capture_output=True)
    return run_dir


def series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tbparse import SummaryReader

    frame = SummaryReader(str(run_dir / "tensorboard"), pivot=False).scalars
    out = {}
    for tag in ("train/reward", "val/e2e_acc", "train/executor/calls"):
        rows = frame[frame.tag == tag].sort_values("step")
        out[tag] = sorted(dict(zip(rows.step.tolist(), rows.value.tolist(), strict=True)).items())
    return out


def saves_seen(path: Path, last: float) -> tuple[bool, float]:
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return False, last
    return mtime != last, mtime


def kill_after_saves(
    argv: list[str], env: dict, checkpoint: Path, saves: int, pause: float, relative: bool = False
) -> int:
    """Start `argv`, SIGKILL it (its DDP ranks with it) `pause` seconds after it has been seen to write
    `checkpoint` `saves` times (a step, a validation or a save may be under way); with `relative`, `pause`
    times the interval between the last two saves seen instead (seconds after a first save), so that the kill
    lands at the same place in the run on a fast machine as on a slow one (in seconds, a fast machine
    finished the run first). Returns the step of the checkpoint it left."""
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    mtime, deadline, seen_at = None, time.monotonic() + 600, []  # when each save was seen
    while len(seen_at) < saves and process.poll() is None and time.monotonic() < deadline:
        changed, mtime = saves_seen(checkpoint, mtime)
        if changed:
            seen_at.append(time.monotonic())
        time.sleep(0.01)
    time.sleep(pause * (seen_at[-1] - seen_at[-2]) if relative and len(seen_at) >= 2 else pause)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # rank 1 is rank 0's child
    process.wait()
    return torch.load(checkpoint, weights_only=False)["global_step"]


@pytest.mark.parametrize("case", range(3))
def test_kill_anywhere_and_resume_gives_the_same_run(tmp_path, env, uninterrupted, case):
    rng = random.Random(case)
    saves_before_kill, pause = rng.randint(1, 4), rng.uniform(0.0, 1.5)
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    killed_at = kill_after_saves(
        command(run_dir, "auto_resume=false"), env, checkpoint, saves_before_kill, pause, relative=True
    )
    assert killed_at < 12

    resumed = subprocess.run(command(run_dir), cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr

    expected, got = series(uninterrupted), series(run_dir)
    assert got == expected, f"killed after checkpoint step {killed_at}"
    assert len(expected["val/e2e_acc"]) == 4  # before training and after steps 4, 8, 12
    final = assert_same_training_state(uninterrupted, run_dir)
    assert final["global_step"] == 12


def assert_same_training_state(expected_dir: Path, run_dir: Path) -> dict:
    """The two runs' last.ckpt hold the same step, weights and optimizer state, bit for bit; returns the first."""
    expected, got = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False) for d in (expected_dir, run_dir)
    )
    assert expected["global_step"] == got["global_step"]
    assert expected["state_dict"].keys() == got["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), name
    for state, other in zip(
        expected["optimizer_states"][0]["state"].values(),
        got["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        for key, value in state.items():
            assert torch.equal(value, other[key]), key
    return expected
