"""This process's place in the default process group; gathering plain objects and reducing values across it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def world_size() -> int:
    """Processes in the default process group (1 when there is none)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1


def rank() -> int:
    return torch.distributed.get_rank() if world_size() > 1 else 0


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` in rank order (collective: every rank calls it); `[obj]` without a process group."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def sum_over_ranks(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Each value summed over the ranks (collective: every rank calls it); the values without a process
    group. `device`: where the collective's tensor lives (the rank's GPU under NCCL)."""
    if world_size() == 1:
        return list(values)
    total = torch.tensor(list(values), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return total.tolist()


def reduce_over_ranks(metrics: dict[str, float], how: Callable[[str], str | None]) -> dict[str, float]:
    """Every rank's metrics in one collective (every rank calls it), each reduced as `how(key)` says:
    "mean", "sum" or "max" over the ranks that have the key, or None for this rank's own value (a key only
    other ranks have is then left out)."""
    if world_size() == 1:
        return metrics
    gathered = gather_objects(metrics)
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for m in gathered for k in m):
        reduction = how(key)
        if reduction is None:
            if key in metrics:
                out[key] = metrics[key]
            continue
        values = [m[key] for m in gathered if key in m]
        out[key] = {"mean": sum(values) / len(values), "sum": sum(values), "max": max(values)}[reduction]
    return out
