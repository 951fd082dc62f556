"""DDP gradient sync under micro-batches: two gloo ranks (ddp_spawn) all-reduce the accumulated gradients once
per optimizer step, not once per micro-batch, and end with the weights of the un-chunked update. A DDP
communication hook counts the buckets each rank reduces (a file per rank), then reduces them as DDP would."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from planlift.data import ProblemDataModule
from planlift.grpo import GRPOModule
from planlift.models import load_policy
from planlift.rewards import ExecutorGroundedReward
from planlift.rm import ConstantRM
from planlift.tasks import ProceduralTask
from tests.grpo.test_module import HashExecutor

pytestmark = pytest.mark.slow


def counting_allreduce(state: str, bucket):
    """DDP's own all-reduce hook, after a line in `<state>/rank<r>` for the bucket it reduces."""
    with open(Path(state) / f"rank{dist.get_rank()}", "a") as file:
        file.write(f"{bucket.index()}\n")
    return default_hooks.allreduce_hook(None, bucket)


class CountBuckets(pl.Callback):
    """Registers `counting_allreduce` on the DDP-wrapped module (Lightning's `ddp_comm_hook` is CUDA-only)."""

    def __init__(self, record_dir: str):
        self.record_dir = record_dir

    def on_train_start(self, trainer, pl_module):
        trainer.strategy.model.register_comm_hook(self.record_dir, counting_allreduce)


def fit(tiny_checkpoint, task, record_dir: Path, **kwargs) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
    """Two optimizer steps on two ranks; returns rank 0's weights and each rank's reduced bucket indices."""
    record_dir.mkdir()
    module = GRPOModule(
        load_policy(str(tiny_checkpoint)),
        ExecutorGroundedReward(HashExecutor(task), task, rm=ConstantRM(1.0), mode="uplift_only"),
        task,
        functools.partial(torch.optim.SGD, lr=0.5),  # picklable: ddp_spawn sends the module to each rank
        num_generations=4,
        max_new_tokens=12,
        max_grad_norm=None,
        seed=1,
        **kwargs,
    )
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        callbacks=[CountBuckets(str(record_dir))],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=ProblemDataModule(task, problems_per_step=2, val_problems=4, seed=0))
    weights = {name: p.detach().clone() for name, p in module.planner.named_parameters()}
    buckets = [[int(line) for line in (record_dir / f"rank{r}").read_text().split()] for r in (0, 1)]
    return weights, buckets


def test_micro_batches_all_reduce_once_per_optimizer_step(tiny_checkpoint, tmp_path):
    task = ProceduralTask(sizes={"train": 8, "validation": 4, "test": 0})
    # each rank samples 2 problems x 4 generations = 8 rows: micro-batches of 3 make 3 backward passes
    full, full_buckets = fit(tiny_checkpoint, task, tmp_path / "full")
    micro, micro_buckets = fit(tiny_checkpoint, task, tmp_path / "micro", micro_batch_size=3)
    _, twice_buckets = fit(tiny_checkpoint, task, tmp_path / "twice", micro_batch_size=3, num_iterations=2)

    per_step = sorted(set(full_buckets[0]))
    assert per_step
    # two optimizer steps in each run (max_steps counts optimizer steps): every bucket is reduced twice on
    # each rank, whether the batch is one backward pass or three (before: three times per step)
    for buckets in (*full_buckets, *micro_buckets, *twice_buckets):
        assert sorted(buckets) == sorted(per_step * 2)

    initial = dict(load_policy(str(tiny_checkpoint)).model.named_parameters())
    assert any(not torch.equal(full[name], initial[name]) for name in full)  # the update moved the planner
    for name, value in full.items():  # and the locally accumulated gradients reduce to the same update
        torch.testing.assert_close(micro[name], value, rtol=1e-4, atol=1e-6)
