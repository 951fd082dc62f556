"""planlift.distributed over a real process group: two gloo ranks in two processes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from planlift.distributed import gather_objects, reduce_over_ranks, sum_over_ranks, world_size
from planlift.grpo.rank_metrics import batch_reduction
from planlift.rewards import RewardBatch, RewardRecord


def _rank_main(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metrics = {
            "train/reward/final": [0.25, 0.75][rank],
            "train/rollout/logprob_abs_diff_max": [3.0, 1.0][rank],
            "train/rollout/weight_megabytes": [2.0, 0.0][rank],  # rank 0 alone loads a shared server
            "train/time/rollout": [5.0, 7.0][rank],
        }
        if rank == 1:
            metrics["train/reward/masked/rm_error"] = 2.0  # a key only one rank has
        results[rank] = {
            "world_size": world_size(),
            "sum": sum_over_ranks([10.0 * (rank + 1), 1.0]),
            "reduced": reduce_over_ranks(metrics, batch_reduction),
            "gathered": gather_objects(rank),
        }
    finally:
        dist.destroy_process_group()


def _records(rank: int) -> list[RewardRecord]:
    """Rank 0: four samples, one masked; rank 1: four samples, three masked (so its means are over fewer)."""
    if rank == 0:
        finals = [(1.0, None), (0.0, None), (0.5, None), (0.0, "executor_error")]
    else:
        finals = [(1.0, None), (0.0, "executor_error"), (0.0, "rm_error"), (0.2, "executor_error")]
    return [
        RewardRecord(e2e=float(final > 0), w=final, b=0.0, uplift=final, rm=1.0, leakage=0.0, final=final)
        if reason is None
        else RewardRecord(e2e=0.0, leakage=0.0, mask_reason=reason)
        for final, reason in finals
    ]


def _reward_rank_main(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        counts = {}
        metrics = RewardBatch(_records(rank), group_size=2).metrics("train", counts)
        results[rank] = reduce_over_ranks(metrics, batch_reduction, counts)
    finally:
        dist.destroy_process_group()


def test_reward_metrics_over_two_ranks_are_those_of_the_whole_batch(tmp_path):
    """Means weighted by how many values each rank's is over, per-term stds pooled: the same as one batch
    holding both ranks' samples (an equal-weight mean gave train/reward/final 0.75 for 0.625)."""
    results = mp.Manager().dict()
    mp.spawn(_reward_rank_main, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    whole = RewardBatch(_records(0) + _records(1), group_size=2).metrics("train")
    assert whole["train/reward/final"] == pytest.approx(2.5 / 4)
    for rank in (0, 1):
        batch = {k: v for k, v in results[rank].items() if batch_reduction(k) is not None}
        assert batch.keys() == {k for k in whole if batch_reduction(k) is not None}
        assert batch == pytest.approx({k: whole[k] for k in batch}, rel=1e-12, abs=1e-12)


def test_reductions_over_two_gloo_ranks(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    batch = {
        "train/reward/final": 0.5,
        "train/rollout/logprob_abs_diff_max": 3.0,
        "train/reward/masked/rm_error": 2.0,
    }
    own = [
        {"train/rollout/weight_megabytes": 2.0, "train/time/rollout": 5.0},
        {"train/rollout/weight_megabytes": 0.0, "train/time/rollout": 7.0},
    ]
    for rank in (0, 1):
        assert results[rank] == {
            "world_size": 2,
            "sum": [30.0, 2.0],
            "reduced": {**batch, **own[rank]},
            "gathered": [0, 1],
        }


@pytest.mark.parametrize(
    ("key", "reduction"),
    [
        ("train/reward/final", "mean"),
        ("train/reward/masked", "sum"),
        ("train/reward/masked/executor_error", "sum"),
        ("train/reward/masked_frac", "mean"),
        ("train/reward/final_std", "std"),
        ("train/reward_std", "mean"),  # a mean of the groups' stds
        ("train/trace/step_acc", "mean"),
        ("train/loss", "mean"),
        ("train/frac_reward_zero_std", "mean"),
        ("train/frac_groups_without_signal", "mean"),
        ("train/rollout/logprob_abs_diff_mean", "mean"),
        ("train/rollout/logprob_abs_diff_max", "max"),
        ("train/rollout/is_weight_mean", "mean"),
        ("train/rollout/weight_megabytes", None),
        ("train/time/rollout", None),
        ("train/executor/calls", None),
        ("train/lr", None),
        ("train/baseline_cache_size", None),
    ],
)
def test_which_train_metrics_are_the_whole_batchs(key, reduction):
    assert batch_reduction(key) == reduction


def test_without_a_process_group_the_values_pass_through():
    assert not dist.is_initialized()
    metrics = {"train/reward/final": 0.5}
    assert sum_over_ranks([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]
    assert reduce_over_ranks(metrics, batch_reduction) is metrics and gather_objects(7) == [7]
