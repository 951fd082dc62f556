"""Run names from overrides and the checkpoint a restarted job resumes from (planlift.runtime)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from planlift import runtime
from planlift.errors import ConfigError


def test_run_names_are_one_directory_level():
    assert runtime._run_name("reward=grounded,seed=1") == "reward=grounded,seed=1"
    assert runtime._run_name("") == "default"
    assert runtime._run_name("executor.base_url=http://h:8/v1") == "executor.base_url=http:__h:8_v1"
    long = runtime._run_name(",".join(f"key{i}=value{i}" for i in range(40)))
    assert len(long) <= 200 and "/" not in long
    assert long != runtime._run_name(",".join(f"key{i}=value{i}" for i in range(41)))  # the hash differs


def test_long_run_names_keep_seed_and_length_so_compare_pools_the_seeds():
    """Hydra sorts the overrides, so `seed` and `task.length` come last: cut off with the tail, every seed
    of an arm was an arm of its own (and its hash differed), and compare.py had nothing to pool."""
    from planlift.compare import Run, parse_run_name

    model = "model.pretrained=/checkpoints/" + "x" * 150
    names = [runtime._run_name(f"{model},reward=grounded,seed={seed},task.length=20") for seed in (0, 1)]
    runs = [Run(name, parse_run_name(name)) for name in names]
    assert all(len(name) <= 200 for name in names) and names[0] != names[1]
    assert [run.seed for run in runs] == ["0", "1"] and {run.length for run in runs} == {"20"}
    assert runs[0].arm == runs[1].arm and runs[0].arm.startswith("model.pretrained=_checkpoints_xxx")
    other = runtime._run_name(f"{model},reward=exec_only,seed=0,task.length=20")
    assert Run(other, parse_run_name(other)).arm != runs[0].arm  # the hash of the rest tells arms apart


def test_resume_checkpoint_picks_the_newest_by_step_then_time(tmp_path):
    assert runtime.resume_checkpoint(tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"global_step": 5}, last)
    assert runtime.resume_checkpoint(tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # Lightning's save when SLURM signals a requeue
    torch.save({"global_step": 3}, hpc)
    os.utime(last, (1, 1))  # a copied run directory, another node's clock: the older step looks newer
    assert runtime.resume_checkpoint(tmp_path) == str(last)
    torch.save({"global_step": 5}, hpc)  # the same step: the later save
    assert runtime.resume_checkpoint(tmp_path) == str(hpc)
    os.utime(hpc, (0, 0))
    assert runtime.resume_checkpoint(tmp_path) == str(last)


def test_an_incomplete_checkpoint_is_skipped_when_a_complete_one_exists(tmp_path, caplog):
    """Lightning's SLURM handler killed mid-save on a sharded model leaves hpc_ckpt_<n>.ckpt/ without its
    meta.pt (the newest, by its directory's time): the job resumes from the complete last.ckpt and says so."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"global_step": 4}, last)
    partial = distributed_checkpoint(tmp_path / "hpc_ckpt_2.ckpt", {"planner.w": torch.zeros(2)}, meta=False)
    with caplog.at_level(logging.WARNING, logger="planlift.runtime"):
        assert runtime.resume_checkpoint(tmp_path) == str(last)
    assert f"auto_resume skips {partial}: not a complete checkpoint" in caplog.text
    os.remove(last)  # nothing complete: the incomplete one is returned, and the caller names it
    assert runtime.resume_checkpoint(tmp_path) == partial


def test_a_checkpoint_that_is_missing_or_cut_short_is_named_before_any_model_loads(tmp_path):
    whole = tmp_path / "whole.ckpt"
    torch.save({"global_step": 3}, whole)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[:-40])  # a save that stopped before its central directory
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(4096))

    def resume(**cfg):
        return runtime.checkpoint_to_resume(OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, **cfg}))

    assert resume(ckpt_path=str(whole)) == str(whole)
    for bad, reason in (
        (cut, "not a complete checkpoint"),
        (noise, "not a complete"),
        (tmp_path / "no", "no such"),
    ):
        with pytest.raises(ConfigError, match=f"ckpt_path={bad}: {reason}"):
            resume(ckpt_path=str(bad))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(cut.read_bytes())
    with pytest.raises(ConfigError, match="auto_resume found=.*last.ckpt: not a complete checkpoint"):
        resume(auto_resume=True)
    assert resume(auto_resume=False) is None


def distributed_checkpoint(path, state_dict, meta=True):
    """A directory as ModelParallelStrategy saves one with save_distributed_checkpoint=true: the shards of
    {"state_dict": ...} (torch.distributed.checkpoint, here from one process) and Lightning's meta.pt."""
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is ... uninitialized": a single-process save
        dcp.save({"state_dict": state_dict}, checkpoint_id=str(path))
    if meta:
        torch.save({"global_step": 2}, path / "meta.pt")
    return str(path)


def test_a_distributed_checkpoint_directory_is_found_checked_and_resumed(tmp_path):
    """save_distributed_checkpoint=true writes last.ckpt as a directory: auto_resume finds it (it started
    afresh before), a directory whose save did not finish is named, and its kind is read from the index."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    last = distributed_checkpoint(checkpoints / "last.ckpt", {"planner.lm_head.weight": torch.zeros(2)})

    def resume(kind="planner", **cfg):
        cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "auto_resume": True, **cfg})
        return runtime.checkpoint_to_resume(cfg, kind=kind)

    assert resume() == last
    with pytest.raises(
        ConfigError, match=r"found=.*last.ckpt: not a reasoning-RM .*; it looks like a planner"
    ):
        resume(kind="rm")
    rm = distributed_checkpoint(tmp_path / "rm.ckpt", {"model.score.weight": torch.zeros(2)})
    assert resume(kind="rm", ckpt_path=rm) == rm
    unfinished = distributed_checkpoint(
        tmp_path / "unfinished.ckpt", {"planner.w": torch.zeros(2)}, meta=False
    )
    with pytest.raises(
        ConfigError, match=r"unfinished.ckpt: not a complete checkpoint \(a directory without"
    ):
        resume(ckpt_path=unfinished)
    (Path(unfinished) / "meta.pt").write_bytes(b"not a zip")  # written by something else, or cut short
    with pytest.raises(
        ConfigError, match=r"unfinished.ckpt: not a complete checkpoint \(its meta.pt is truncated"
    ):
        resume(ckpt_path=unfinished)
    # a copy or a cleanup that lost a shard: named before any model is built (Lightning fails inside its load)
    shards = sorted(Path(last).glob("*.distcp"))
    shards[0].write_bytes(shards[0].read_bytes()[:-1])
    with pytest.raises(
        ConfigError,
        match=rf"last.ckpt: not a complete checkpoint \(its index names shards that are missing or shorter than it says: {shards[0].name}",
    ):
        resume()
    shards[0].unlink()
    with pytest.raises(ConfigError, match=rf"missing or shorter than it says: {shards[0].name}"):
        resume()
    last = distributed_checkpoint(checkpoints / "last.ckpt", {"planner.lm_head.weight": torch.zeros(2)})
    # killed between the two renames of planlift.atomic.commit: the previous checkpoint is last.ckpt.old
    os.replace(last, checkpoints / "last.ckpt.old")
    assert resume() == str(checkpoints / "last.ckpt.old")


def test_the_validation_schedule_is_checked_before_the_run(caplog):
    def check(**trainer):
        runtime.check_validation_schedule(OmegaConf.create(trainer))

    for bad in (0, -2, 0.0):
        with pytest.raises(ConfigError, match=f"trainer.val_check_interval must be > 0, got {bad}"):
            check(val_check_interval=bad, max_steps=4)
    with caplog.at_level("WARNING", logger="planlift.runtime"):
        check(val_check_interval=100, max_steps=4)
        assert "the run will not validate" in caplog.text
        caplog.clear()
        check(val_check_interval=50, max_steps=120)
        assert "the last validation runs after step 100" in caplog.text
        caplog.clear()
        check(val_check_interval=2, max_steps=4)
        check(val_check_interval=0.5, max_steps=4)
        check(val_check_interval=100, max_steps=-1)  # no step limit: epochs decide
        assert not caplog.text


def test_a_checkpoint_of_the_other_entry_point_is_named_before_any_model_loads(tmp_path, caplog):
    """src/train.py resumes a GRPOModule (weights under `planner.`), src/train_rm.py a RubricRMModule
    (under `model.`); the other's checkpoint used to fail deep in on_load_checkpoint (KeyError)."""

    def save(name, checkpoint):
        torch.save(checkpoint, tmp_path / name)
        return str(tmp_path / name)

    weights = torch.zeros(2)
    planner = save("planner.ckpt", {"state_dict": {"planner.lm_head.weight": weights}, "planlift": {}})
    rm = save("rm.ckpt", {"state_dict": {"model.score.weight": weights}, "planlift": {"ranks": [{}]}})
    other = save("other.ckpt", {"state_dict": {"encoder.weight": weights}})
    bare = save("bare.ckpt", {"lm_head.weight": weights})  # a plain state_dict, not Lightning's

    def resume(path, kind):
        cfg = OmegaConf.create({"ckpt_path": path, "paths": {"output_dir": str(tmp_path)}})
        return runtime.checkpoint_to_resume(cfg, kind=kind)

    assert resume(planner, "planner") == planner and resume(rm, "rm") == rm
    assert resume(rm, None) == rm  # no kind: only readability is checked
    with pytest.raises(
        ConfigError,
        match=rf"ckpt_path={rm}: not a planner-training checkpoint \(src/train.py\); it looks like a "
        r"reasoning-RM training checkpoint \(src/train_rm.py\)",
    ):
        resume(rm, "planner")
    with pytest.raises(ConfigError, match=rf"ckpt_path={planner}: not a reasoning-RM .* a planner-training"):
        resume(planner, "rm")
    with pytest.raises(
        ConfigError, match=r"not a planner-training checkpoint .*; its weights are under `encoder.`"
    ):
        resume(other, "planner")
    with pytest.raises(ConfigError, match=r"not a planner-training checkpoint .*; it has no state_dict"):
        resume(bare, "planner")
    # a state torch's default weights_only load refuses (a user callback's numpy scalar): Lightning decides,
    # as with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 it loads it
    custom = save("custom.ckpt", {"state_dict": {"rm.w": weights}, "callbacks": {"Mine": np.float64(0.5)}})
    with caplog.at_level(logging.WARNING, logger="planlift"):
        assert resume(custom, "planner") == custom
    assert f"ckpt_path={custom}: its kind was not checked" in caplog.text


def test_the_seed_and_learning_rate_are_checked_before_the_run():
    assert runtime.check_seed(0) == 0 and runtime.check_seed(2**32 - 1) == 2**32 - 1
    assert type(seed := runtime.check_seed(1e3)) is int and seed == 1000  # `seed=1e3` on the command line
    for bad in ("abc", None, 1.5, True):
        with pytest.raises(ConfigError, match=f"seed must be an integer, got {bad!r}"):
            runtime.check_seed(bad)
    for bad in (-1, 2**32):
        with pytest.raises(ConfigError, match=rf"seed must be in 0\.\.{2**32 - 1}, got {bad}"):
            runtime.check_seed(bad)

    def check(lr):
        runtime.check_learning_rate(
            OmegaConf.create({"algorithm": {"optimizer": {"lr": lr}}}), "algorithm.optimizer.lr"
        )

    check(1e-4)
    check(None)  # the optimizer's default
    runtime.check_learning_rate(OmegaConf.create({}), "algorithm.optimizer.lr")
    for bad in (0, 0.0, -1e-4, float("nan")):
        with pytest.raises(ConfigError, match=f"algorithm.optimizer.lr must be > 0, got {bad}"):
            check(bad)
    with pytest.raises(ConfigError, match="algorithm.optimizer.lr must be a number, got 'fast'"):
        check("fast")


def test_event_files_written_after_leaving_the_second_sort_after(tmp_path, monkeypatch):
    """TensorBoard reads a run's event files in name order; the name's per-process counter is not
    zero-padded, so within one second ".10" sorts before ".9". After `leave_this_second` the next file's
    second is later, and it sorts after whatever the counter."""
    from tensorboard.summary.writer import event_file_writer
    from torch.utils.tensorboard import SummaryWriter

    def files_of(counter: int, wait: bool) -> list[str]:
        monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(counter))
        folder = tmp_path / f"run{counter}{wait}"
        names = []
        for _ in range(2):  # the step-0 validation's writer, then the fit's
            writer = SummaryWriter(str(folder))
            names.append(Path(writer.file_writer.event_writer._file_name).name)
            writer.close()
            if wait:
                runtime.leave_this_second()
        return names

    first, second = files_of(9, wait=True)
    assert sorted([second, first]) == [first, second]
    for _ in range(5):  # without the wait: same second (almost always), ".10" sorts before ".9"
        first, second = files_of(9, wait=False)
        if first.split(".")[3] == second.split(".")[3]:
            assert sorted([first, second]) == [second, first]
            break
