"""A process killed while it writes a checkpoint leaves the previous one whole (planlift.atomic, used by
planlift.callbacks.checkpoint for last.ckpt)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from planlift.atomic import save_atomically

ROOT = Path(__file__).resolve().parents[1]

# Saves ~8 MB checkpoints in a loop, each holding its own index, through the callback's mechanism.
WRITER = """
import sys, torch
from pathlib import Path
from planlift.atomic import save_atomically
path = Path(sys.argv[1])
for i in range(10**6):
    state = {"index": i, "weights": torch.full((2_000_000,), float(i))}
    save_atomically(lambda p: torch.save(state, p), path)
    print(i, flush=True)
"""


def test_kills_during_saves_never_leave_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    rng = random.Random(0)
    last_index = -1
    for _ in range(5):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        writer.stdout.readline()  # at least one checkpoint exists
        time.sleep(rng.uniform(0.0, 0.3))  # then die at a random point of some later save
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        state = torch.load(path, weights_only=True)
        assert state["weights"][0].item() == state["index"] == state["weights"][-1].item()
        assert state["index"] >= 0
        last_index = state["index"]
    assert last_index >= 0


def test_save_atomically_replaces_and_leaves_no_staging(tmp_path):
    path = tmp_path / "last.ckpt"
    save_atomically(lambda p: torch.save({"a": 1}, p), path)
    save_atomically(lambda p: torch.save({"a": 2}, p), path)
    assert torch.load(path)["a"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_run_may_switch_between_file_and_directory_checkpoints(tmp_path):
    """save_distributed_checkpoint toggled between runs of one output dir: each commit replaces the other
    kind (the file left as last.ckpt.old used to make the next directory commit raise NotADirectoryError)."""
    path = tmp_path / "last.ckpt"

    def directory(staging: Path, value: int) -> None:
        staging.mkdir()
        (staging / "shard").write_text(str(value))

    for value, save in enumerate([lambda p, v: torch.save({"a": v}, p), directory] * 2 + [directory]):
        save_atomically(lambda staging, v=value, save=save: save(staging, v), path)
        saved = (path / "shard").read_text() if path.is_dir() else str(torch.load(path)["a"])
        assert saved == str(value)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_killed_saves_leftover_staging_is_cleared_before_the_next_save(tmp_path):
    """A distributed save killed midway leaves last.ckpt.tmp/ with its shards; the next save (perhaps at
    another world size) starts from an empty directory, so no stale shard is committed."""
    from types import SimpleNamespace

    from planlift.callbacks.checkpoint import LastCheckpoint

    callback = LastCheckpoint(str(tmp_path))
    staging = tmp_path / "last.ckpt.tmp"
    staging.mkdir()
    (staging / "__7_0.distcp").write_bytes(b"stale")

    def save_checkpoint(target, weights_only):
        Path(target).mkdir(exist_ok=True)
        (Path(target) / "__0_0.distcp").write_bytes(b"new")

    trainer = SimpleNamespace(
        global_step=3,
        is_global_zero=True,
        loggers=[],
        save_checkpoint=save_checkpoint,
        strategy=SimpleNamespace(barrier=lambda: None),
    )
    callback._save(trainer)
    assert sorted(p.name for p in (tmp_path / "last.ckpt").iterdir()) == ["__0_0.distcp"]
    assert not staging.exists()
