"""GRPOModule plumbing on a tiny random model with a hash-scripted executor (not a capability test)."""

import hashlib

import pytest
import pytorch_lightning as pl
import torch

from planlift.data import ProblemDataModule
from planlift.executors.base import Executor, ExecutorResult
from planlift.grpo import GRPOModule
from planlift.models import load_policy
from planlift.rewards import ExecutorGroundedReward
from planlift.rm import ConstantRM


class HashExecutor(Executor):
    """Right or wrong by a hash of the prompt: deterministic, varied rewards for plumbing tests."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def _generate(self, prompts, n, greedy):
        out = []
        for prompt in prompts:
            digest = int(hashlib.sha256(prompt.user.encode()).hexdigest(), 16)
            out.append(ExecutorResult(texts=tuple(str((digest >> i) % 10) for i in range(n))))
        return out


def build(tiny_checkpoint, task, **kwargs):
    policy = load_policy(str(tiny_checkpoint))
    reward = ExecutorGroundedReward(HashExecutor(task), task, rm=ConstantRM(1.0), mode="uplift_only")
    optimizer = lambda params: torch.optim.SGD(params, lr=0.5)  # noqa: E731
    return GRPOModule(
        policy,
        reward,
        task,
        optimizer,
        num_generations=4,
        max_new_tokens=12,
        max_grad_norm=None,
        seed=1,
        **kwargs,
    )


def fit_one_step(module, task):
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=ProblemDataModule(task, problems_per_step=3, val_problems=4, seed=0))
    return {name: p.detach().clone() for name, p in module.planner.named_parameters()}


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "dr_grpo"])
def test_micro_batches_give_the_full_batch_update(tiny_checkpoint, procedural_task, aggregation):
    torch.manual_seed(0)
    full = fit_one_step(
        build(tiny_checkpoint, procedural_task, loss_aggregation=aggregation), procedural_task
    )
    torch.manual_seed(0)
    micro = fit_one_step(
        build(tiny_checkpoint, procedural_task, loss_aggregation=aggregation, micro_batch_size=5),
        procedural_task,
    )
    initial = load_policy(str(tiny_checkpoint)).model.state_dict()
    moved = [name for name in full if not torch.equal(full[name], initial[name])]
    assert moved, "the update changed no parameter"
    for name in full:
        torch.testing.assert_close(micro[name], full[name], rtol=1e-4, atol=1e-6)


def test_executor_is_not_part_of_the_module(tiny_checkpoint, procedural_task):
    from planlift.executors import HFExecutor

    executor = HFExecutor(str(tiny_checkpoint), device="cpu")
    reward = ExecutorGroundedReward(executor, procedural_task, mode="exec_only")
    module = GRPOModule(
        load_policy(str(tiny_checkpoint)),
        reward,
        procedural_task,
        lambda params: torch.optim.AdamW(params, lr=1e-3),
    )
    names = [name for name, _ in module.named_parameters()]
    assert names and all(name.startswith("planner.") for name in names)
    assert not any(key.startswith(("reward", "executor")) for key in module.state_dict())
    optimizer = module.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.planner.parameters()}
    assert not optimized & {id(p) for p in executor.model.parameters()}
