"""Hardware presets that run on CPU, end to end (slow tier): FSDP2 through ModelParallelStrategy on two
gloo processes (equal to DDP step for step) and QLoRA with the bitsandbytes CPU backend.
Every preset composes and binds in tests/test_configs.py; GPU presets are checked by scripts/gpu_check.sh."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.test_train_e2e import scalars, train

pytestmark = pytest.mark.slow


def test_fsdp_sim_shards_and_matches_ddp_step_for_step(tmp_path, cache_dir):
    fsdp, ddp = tmp_path / "fsdp", tmp_path / "ddp"
    train(fsdp, cache_dir, "hardware=fsdp_sim")
    train(ddp, cache_dir, "hardware=ddp_sim")
    for log in (fsdp / "train.log", fsdp / "train_ddp_process_1.log"):
        assert "sharded the planner: 2 Qwen2DecoderLayer blocks + root" in log.read_text()  # both ranks
    writers = {e.name.split(".")[-2] for e in (fsdp / "tensorboard").rglob("events.out.tfevents.*")}
    assert len(writers) == 1  # rank-0 logging only
    logged_fsdp, logged_ddp = scalars(fsdp), scalars(ddp)
    for tag in ("train/loss", "train/reward/final", "val/e2e_acc"):
        assert [s for s, _ in logged_fsdp[tag]] == [s for s, _ in logged_ddp[tag]]
        assert [v for _, v in logged_fsdp[tag]] == pytest.approx([v for _, v in logged_ddp[tag]], abs=1e-5)
    sharded = torch.load(fsdp / "checkpoints" / "last.ckpt", weights_only=False)
    replicated = torch.load(ddp / "checkpoints" / "last.ckpt", weights_only=False)
    assert sharded["global_step"] == 4 and sharded["state_dict"].keys() == replicated["state_dict"].keys()
    for key, value in replicated["state_dict"].items():
        assert torch.allclose(sharded["state_dict"][key], value, atol=1e-5), key
    from planlift.models import load_policy

    exported = load_policy(str(fsdp / "planner_hf")).model.state_dict()  # gathered from the shards
    for key, value in sharded["state_dict"].items():
        assert torch.equal(exported[key.removeprefix("planner.")], value), key


def test_fsdp_sim_keeps_float32_weights_computed_in_bf16(tmp_path, cache_dir):
    """algorithm.fsdp_compute_dtype (bfloat16 in hardware=fsdp): float32 shards for the optimizer, gathered
    in bf16 for compute (tests/grpo/test_sharding.py checks what the policy does to a forward and a step)."""
    train(tmp_path, cache_dir, "hardware=fsdp_sim", "algorithm.fsdp_compute_dtype=bfloat16")
    for log in (tmp_path / "train.log", tmp_path / "train_ddp_process_1.log"):
        assert "blocks + root over DeviceMesh" in log.read_text()
        assert "(weights float32, compute bfloat16)" in log.read_text()
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {value.dtype for value in state.values()} == {torch.float32}
    assert [v for _, v in scalars(tmp_path)["train/loss"]]  # it trained


def test_fsdp_sim_distributed_checkpoint_resumes_as_an_uninterrupted_run(tmp_path, cache_dir):
    """save_distributed_checkpoint=true: last.ckpt is a directory of shards; a restarted job finds it (it
    started afresh before) and ends where one never interrupted ends."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    sharded = ("hardware=fsdp_sim", "trainer.strategy.save_distributed_checkpoint=true")
    resumed, whole = tmp_path / "resumed", tmp_path / "whole"
    train(resumed, cache_dir, *sharded, "trainer.max_steps=2")
    assert (resumed / "checkpoints" / "last.ckpt" / "meta.pt").is_file()
    second = train(resumed, cache_dir, *sharded)  # the job again, to debug=fast's 4 steps
    assert f"resuming from {resumed / 'checkpoints' / 'last.ckpt'}" in second.stdout + second.stderr
    train(whole, cache_dir, *sharded)
    states = {}
    for run in (resumed, whole):
        dcp_to_torch_save(run / "checkpoints" / "last.ckpt", run / "last.pt")
        states[run] = torch.load(run / "last.pt", weights_only=False)["state_dict"]
        assert (
            torch.load(run / "checkpoints" / "last.ckpt" / "meta.pt", weights_only=False)["global_step"] == 4
        )
    assert states[resumed].keys() == states[whole].keys() and states[whole]
    for key, value in states[whole].items():
        assert torch.allclose(states[resumed][key], value, atol=1e-6), key
    logged_resumed, logged_whole = scalars(resumed), scalars(whole)
    assert sorted(s for s, _ in logged_resumed["train/loss"]) == [0, 1, 2, 3]  # each step once: 2, 3 resumed
    assert dict(logged_resumed["train/loss"]) == pytest.approx(dict(logged_whole["train/loss"]), abs=1e-6)


def test_qlora4bit_trains_on_cpu(tmp_path, cache_dir):
    run = tmp_path / "qlora"
    result = train(run, cache_dir, "hardware=qlora4bit", "trainer.accelerator=cpu")
    logged = scalars(run)
    assert [s for s, _ in logged["train/loss"]] == [0, 1, 2, 3]
    assert all(torch.isfinite(torch.tensor([v for _, v in logged["train/loss"]])))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert state and all("lora_" in key for key in state)  # only the adapter trains and is saved
    assert any(value.abs().sum() > 0 for key, value in state.items() if "lora_B" in key)  # it moved from 0
    config = json.loads((run / "planner_hf" / "config.json").read_text())
    assert "quantization_config" not in config  # the dequantized base plus the adapter's delta
    adapter = json.loads((run / "planner_hf" / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_ddp_job_in_a_local_multirun_relaunches_only_itself(tmp_path, cache_dir, launcher):
    """Lightning re-runs sys.argv (or `python -m <__main__>`) for rank 1: inside a multirun that is the
    whole sweep again, under submitit_local submitit's entry point (planlift.runtime.prepare_ddp_relaunch
    turns either into this job, in this job's directory)."""
    import os
    import subprocess

    from tests.test_train_e2e import ROOT, sweep_command

    sweep = tmp_path / "sweep"
    # a MASTER_PORT every job inherits (as from a shell, or from this test process after an in-process DDP
    # test): each distributed job must reserve its own all the same
    env = {**os.environ, "PLANLIFT_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["MASTER_PORT"] = "29431"
    command = sweep_command("hardware", sweep, f"hydra/launcher={launcher}")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert jobs == ["0_hardware=cpu,seed=0", "1_hardware=ddp_sim,seed=0", "2_hardware=fsdp_sim,seed=0"]
    # submitit_local starts the jobs at once: each distributed one reserved its own rendezvous port
    # (planlift.rendezvous; two picks of a free port collided in CI with EADDRINUSE before)
    ports = [
        re.findall(r"rendezvous port (\d+) reserved", (sweep / job / "train.log").read_text()) for job in jobs
    ]
    assert ports[0] == [] and len(ports[1]) == len(ports[2]) == 1 and ports[1] != ports[2], ports
    for job in jobs[1:]:
        assert "MASTER_PORT=29431 is set for every job" in (sweep / job / "train.log").read_text()
    if launcher == "basic":
        assert (result.stdout + result.stderr).count("Launching 3 jobs locally") == 1  # no sweep of its own
    assert sorted(p.name for p in (sweep / "tensorboard").iterdir()) == [j.split("_", 1)[1] for j in jobs]
    for job in jobs[1:]:  # DDP and ModelParallelStrategy (FSDP2) relaunch the same way
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # rank 1 ran this job, in its dir
        assert torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
