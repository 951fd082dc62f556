"""kill -9 `train_rm.py` at a random point and run it again: the same RM training as one never interrupted.

The RM trains 40 steps (checkpoint every 2, dev check every 8) in a real subprocess on 10 groups in
batches of 4, so epochs end with a short batch and the run crosses 13 of them; LoRA dropout draws from
torch's generator. Also under `hardware=ddp_sim` (two gloo ranks). The killed run is resumed by
rerunning the same command (`auto_resume`), and compared with an uninterrupted one: the logged series, the final weights, optimizer and scheduler state bit for bit,
and the exported reward model byte for byte.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.rm.test_train_eval import tiny_groups, tiny_rm
from tests.test_exact_resume import assert_same_training_state, kill_after_saves

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STEPS = 40


@pytest.fixture(scope="module")
def groups_dir(tmp_path_factory):
    return tiny_groups(tmp_path_factory.mktemp("groups"))


@pytest.fixture(scope="module")
def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def command(run_dir: Path, groups_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "src" / "train_rm.py"),
        *tiny_rm(groups_dir),
        "rm_backbone.tiny.num_hidden_layers=2",
        "rm_backbone.lora={r: 4, alpha: 8, dropout: 0.2, target_modules: [q_proj, v_proj]}",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=8",
        "callbacks.last_checkpoint.every_n_steps=2",
        "module.scheduler.num_warmup_steps=3",
        "torch_threads=1",
        "seed=3",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, groups_dir, env):
    """The uninterrupted run's directory, per hardware preset (made once)."""
    runs: dict[str, Path] = {}

    def run(hardware: str) -> Path:
        if hardware not in runs:
            run_dir = tmp_path_factory.mktemp(f"uninterrupted_{hardware}")
            argv = command(run_dir, groups_dir, f"hardware={hardware}")
            done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-3000:]
            runs[hardware] = run_dir
        return runs[hardware]

    return run


def series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The last value logged per step (steps after the checkpoint are logged twice by a resumed run)."""
    from tbparse import SummaryReader

    frame = SummaryReader(str(run_dir / "tensorboard"), pivot=False).scalars
    out = {}
    for tag in ("train/loss", "train/loss/posneg", "val/pairwise_acc", "val/loss"):
        rows = frame[frame.tag == tag].sort_values("step")
        out[tag] = sorted(dict(zip(rows.step.tolist(), rows.value.tolist(), strict=True)).items())
    return out


@pytest.mark.parametrize(("hardware", "case"), [("cpu", 0), ("ddp_sim", 2)])
def test_kill_anywhere_and_rerun_gives_the_same_rm(tmp_path, groups_dir, env, uninterrupted, hardware, case):
    """`ddp_sim`: two gloo ranks, each with its own share of every epoch and its own dropout stream."""
    uninterrupted = uninterrupted(hardware)
    rng = random.Random(case)
    saves_before_kill, delay = rng.randint(1, 6), rng.uniform(0.0, 0.3)
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    argv = command(run_dir, groups_dir, f"hardware={hardware}")
    killed_at = kill_after_saves(argv, env, checkpoint, saves_before_kill, delay)
    assert 0 < killed_at < STEPS

    resumed = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr

    expected, got = series(uninterrupted), series(run_dir)
    assert len(expected["train/loss"]) == STEPS and len(expected["val/pairwise_acc"]) == 6  # 0, 8, ..., 40
    assert got == expected, f"killed after checkpoint step {killed_at}"
    final = assert_same_training_state(uninterrupted, run_dir)
    resumed_final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == STEPS
    assert final["planlift"]["batches_seen"] == resumed_final["planlift"]["batches_seen"] == STEPS
    assert any("lora_" in name for name in final["state_dict"])
    ranks = final["planlift"]["ranks"]
    assert len(ranks) == (2 if hardware == "ddp_sim" else 1)  # each rank's streams
    if hardware == "ddp_sim":  # seeded alike, the ranks would drop the same units (RubricRMModule.setup)
        assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    assert final["lr_schedulers"] == resumed_final["lr_schedulers"]
    exported = [(d / "reward_model" / "model.safetensors").read_bytes() for d in (uninterrupted, run_dir)]
    assert exported[0] == exported[1]
