"""GRPOModule plumbing on a tiny random model with a hash-scripted executor (not a capability test)."""

import hashlib
import logging
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from planlift.data import ProblemDataModule
from planlift.executors.base import Executor, ExecutorResult
from planlift.grpo import GRPOModule
from planlift.grpo.rollout import completion_logprobs
from planlift.models import load_policy
from planlift.models.dropout import active_dropout
from planlift.rewards import ExecutorGroundedReward
from planlift.rewards.records import RewardBatch, RewardRecord
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


def build_lora(tiny_checkpoint, task, dropout, **kwargs):
    policy = load_policy(str(tiny_checkpoint), lora={"r": 4, "alpha": 8, "dropout": dropout})
    reward = ExecutorGroundedReward(HashExecutor(task), task, rm=ConstantRM(1.0), mode="uplift_only")
    return GRPOModule(policy, reward, task, torch.optim.SGD, num_generations=4, max_new_tokens=12, **kwargs)


def train_mode_logprobs(module, rollout):
    module.planner.train()
    with torch.no_grad():
        return completion_logprobs(module.planner, rollout, slice(None), module.temperature)[0]


@pytest.mark.parametrize("disable", [False, True])
def test_old_logprobs_are_the_sampling_policys_with_or_without_dropout(
    tiny_checkpoint, procedural_task, disable, caplog
):
    """The ratio's denominator is the policy that sampled (eval mode); `disable_dropout` makes the update's
    train-mode log-probs equal to it, so the first of `num_iterations` updates starts at ratio 1."""
    torch.manual_seed(0)
    module = build_lora(
        tiny_checkpoint, procedural_task, dropout=0.5, num_iterations=2, disable_dropout=disable
    )
    assert bool(active_dropout(module.planner)) is not disable
    with caplog.at_level(logging.WARNING, logger="planlift.grpo.module"):
        module.on_fit_start()
    assert ("dropout modules are active" in caplog.text) is not disable
    problems = list(procedural_task.problems("train"))[:3]
    rollout = module.sample(problems, 4)
    # a non-zero adapter, so that dropout on its input changes the output
    with torch.no_grad():
        for name, param in module.planner.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    chunks = [slice(0, 5), slice(5, None)]
    old = module._frozen_logprobs(rollout, chunks)
    assert module.planner.training  # restored after the eval-mode recompute
    torch.testing.assert_close(module._frozen_logprobs(rollout, chunks), old, rtol=0, atol=0)
    mask = rollout.completion_mask.bool()
    difference = (train_mode_logprobs(module, rollout) - old).abs()[mask]
    if disable:
        torch.testing.assert_close(difference, torch.zeros_like(difference), rtol=0, atol=1e-5)
    else:
        assert difference.max() > 1e-2  # dropout noise: what disable_dropout removes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 1.5}, r"algorithm\.top_p must be in \(0, 1\], got 1\.5"),
        ({"top_p": 0.0}, r"algorithm\.top_p must be in \(0, 1\]"),
        ({"max_grad_norm": -1}, r"algorithm\.max_grad_norm must be > 0, or null"),
        ({"max_grad_norm": 0}, r"algorithm\.max_grad_norm must be > 0, or null"),
        ({"max_new_tokens": 0}, r"algorithm\.max_new_tokens must be >= 1"),
        ({"val_executor_samples": 0}, r"algorithm\.val_executor_samples must be >= 1"),
        ({"fsdp_compute_dtype": "bf16"}, r"algorithm\.fsdp_compute_dtype must be one of \[.*'bfloat16'"),
    ],
)
def test_invalid_algorithm_values_name_the_key(kwargs, message):
    from planlift.errors import ConfigError

    with pytest.raises(ConfigError, match=message):  # checked before the policy or the reward is touched
        GRPOModule(None, None, None, None, **kwargs)


def test_fsdp_compute_dtype_without_a_sharded_planner_names_the_key(tiny_checkpoint, procedural_task):
    """Under a strategy that does not shard (here: one CPU process) the setting would do nothing."""
    from planlift.errors import ConfigError

    module = build(tiny_checkpoint, procedural_task, fsdp_compute_dtype="bfloat16")
    with pytest.raises(
        ConfigError, match=r"algorithm\.fsdp_compute_dtype=bfloat16 applies to a sharded planner"
    ):
        fit_one_step(module, procedural_task)


def test_a_resume_under_other_task_settings_names_what_changed(tiny_checkpoint, procedural_task, caplog):
    """The checkpoint keeps the task's settings and the executor's identity; resuming under others is
    allowed (a larger split on purpose) but the batch order and baselines then differ: a warning says so."""
    from planlift.tasks import ProceduralTask

    saved = {}
    build(tiny_checkpoint, procedural_task).on_save_checkpoint(saved)
    assert saved["planlift"]["settings"]["task"]["sizes"] == {"train": 300, "validation": 60, "test": 60}
    with caplog.at_level(logging.WARNING):
        build(tiny_checkpoint, procedural_task).on_load_checkpoint(saved)
    assert "settings other than the checkpoint's" not in caplog.text
    other = ProceduralTask(sizes={"train": 100, "validation": 60, "test": 60})
    with caplog.at_level(logging.WARNING):
        build(tiny_checkpoint, other).on_load_checkpoint(saved)
    assert "settings other than the checkpoint's (task.sizes: {'test': 60, 'train': 300" in caplog.text
    assert "'train': 100" in caplog.text


def test_a_checkpoint_of_another_world_size_keeps_every_ranks_cached_baselines(
    tiny_checkpoint, procedural_task, caplog
):
    """Each rank restores its own state when the world size is the checkpoint's (the DDP resume is in the
    slow tier); under another world size a rank takes rank 0's counters and every rank's cached baselines;
    checkpoints from before the per-rank state still load."""
    from planlift.judging import Judgement
    from planlift.tasks.base import Verdict

    def state(rank, key, calls):
        module = build(tiny_checkpoint, procedural_task)
        module.reward.baseline_cache.put(key, Judgement(("1",), (Verdict(True, 1.0, "correct"),)))
        module.reward.executor.stats.calls = calls
        saved = {}
        module.on_save_checkpoint(saved)
        (one,) = saved["planlift"]["ranks"]  # no process group: this process's state only
        return one

    ranks = [state(0, "a", 3), state(1, "b", 5)]
    module = build(tiny_checkpoint, procedural_task)
    with caplog.at_level(logging.WARNING):
        module.on_load_checkpoint({"planlift": {"batches_seen": 7, "ranks": ranks}})
    assert "the state of 2 ranks and this run has 1" in caplog.text
    assert set(module.reward.baseline_cache.entries) == {"a", "b"} and module.batches_seen == 7
    assert module.reward.executor.stats.calls == 3
    same_size = build(tiny_checkpoint, procedural_task)
    same_size.on_load_checkpoint({"planlift": {"batches_seen": 7, "ranks": ranks[1:]}})
    assert (
        set(same_size.reward.baseline_cache.entries) == {"b"} and same_size.reward.executor.stats.calls == 5
    )
    # the format before per-rank states: one state, the baseline cache beside it
    legacy = build(tiny_checkpoint, procedural_task)
    old = {k: v for k, v in ranks[1].items() if k != "baseline_cache"}
    legacy.on_load_checkpoint(
        {"baseline_cache": ranks[1]["baseline_cache"], "planlift": {"batches_seen": 2, **old}}
    )
    assert set(legacy.reward.baseline_cache.entries) == {"b"} and legacy.reward.executor.stats.calls == 5


def test_right_for_wrong_reasons_counts_only_samples_with_an_e2e_verdict(tiny_checkpoint, procedural_task):
    """As val/trace/right_wrong_reasons: a sample whose executor call failed (e2e None) is left out."""
    module = build(tiny_checkpoint, procedural_task)
    problem = procedural_task.problems("train")[0]
    rollout = SimpleNamespace(problems=[problem], group_size=4)
    e2e = [1.0, None, 0.0, 1.0]
    records = [RewardRecord(e2e=v, mask_reason=None if v is not None else "executor_error") for v in e2e]
    scores = RewardBatch(records, group_size=4, reasonings=["no steps"] * 4)  # step_acc 0: wrong reasons
    counts = {}
    metrics = module._sampled_trace_metrics(rollout, scores, counts)
    assert metrics["train/trace/right_wrong_reasons"] == pytest.approx(2 / 3)
    assert counts["train/trace/right_wrong_reasons"] == 3  # what the ranks' values are weighted by
    assert metrics["train/trace/step_acc"] == 0.0
    failed = RewardBatch([RewardRecord(mask_reason="executor_error")] * 4, group_size=4, reasonings=["x"] * 4)
    assert "train/trace/right_wrong_reasons" not in module._sampled_trace_metrics(rollout, failed, {})


@pytest.mark.parametrize(("dtype", "warned"), [("bfloat16", True), ("float32", False)])
def test_low_precision_trainable_weights_are_warned(tiny_checkpoint, procedural_task, caplog, dtype, warned):
    """Full fine-tuning with bf16 weights (hardware=gpu's model.dtype, lora=null): AdamW steps of a small lr
    round away, and the planner hardly moves without a word."""
    policy = load_policy(str(tiny_checkpoint), dtype=dtype)
    reward = ExecutorGroundedReward(HashExecutor(procedural_task), procedural_task, rm=ConstantRM(1.0))
    module = GRPOModule(
        policy, reward, procedural_task, torch.optim.AdamW, num_generations=2, max_new_tokens=4
    )
    with caplog.at_level(logging.WARNING, logger="planlift.grpo.module"):
        module.on_fit_start()
    assert ("rounded away" in caplog.text) is warned
