"""Run names from overrides and the checkpoint a restarted job resumes from (planlift.runtime)."""

from __future__ import annotations

import os

from planlift import runtime


def test_run_names_are_one_directory_level():
    assert runtime._run_name("reward=grounded,seed=1") == "reward=grounded,seed=1"
    assert runtime._run_name("") == "default"
    assert runtime._run_name("executor.base_url=http://h:8/v1") == "executor.base_url=http:__h:8_v1"
    long = runtime._run_name(",".join(f"key{i}=value{i}" for i in range(40)))
    assert len(long) <= 200 and "/" not in long
    assert long != runtime._run_name(",".join(f"key{i}=value{i}" for i in range(41)))  # the hash differs


def test_resume_checkpoint_picks_the_newest(tmp_path):
    assert runtime.resume_checkpoint(tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    assert runtime.resume_checkpoint(tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # Lightning's save when SLURM signals a requeue
    hpc.write_bytes(b"x")
    os.utime(last, (1, 1))
    assert runtime.resume_checkpoint(tmp_path) == str(hpc)
    os.utime(hpc, (0, 0))
    assert runtime.resume_checkpoint(tmp_path) == str(last)
