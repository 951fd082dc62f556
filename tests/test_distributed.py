"""planlift.distributed over a real process group: two gloo ranks in two processes."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from planlift.distributed import gather_objects, mean_over_ranks, sum_over_ranks, world_size


def _rank_main(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metrics = {"reward": [0.25, 0.75][rank], "abs_diff_max": [3.0, 1.0][rank]}
        if rank == 1:
            metrics["reward/masked/rm_error"] = 2.0  # a key only one rank has
        results[rank] = {
            "world_size": world_size(),
            "sum": sum_over_ranks([10.0 * (rank + 1), 1.0]),
            "mean": mean_over_ranks(metrics),
            "gathered": gather_objects(rank),
        }
    finally:
        dist.destroy_process_group()


def test_reductions_over_two_gloo_ranks(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    expected = {"reward": 0.5, "abs_diff_max": 3.0, "reward/masked/rm_error": 2.0}
    for rank in (0, 1):
        assert results[rank] == {"world_size": 2, "sum": [30.0, 2.0], "mean": expected, "gathered": [0, 1]}


def test_without_a_process_group_the_values_pass_through():
    assert not dist.is_initialized()
    metrics = {"reward": 0.5}
    assert sum_over_ranks([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]
    assert mean_over_ranks(metrics) is metrics and gather_objects(7) == [7]
