"""This process's place in the default process group; gathering plain objects and reducing values across it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from planlift.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


def world_size() -> int:
    """Processes in the default process group (1 when there is none)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1


def rank() -> int:
    return torch.distributed.get_rank() if world_size() > 1 else 0


def whole_shares(items: list[T], ranks: int, what: str, setting: str) -> list[T]:
    """`items` cut to a multiple of `ranks`, for a validation set: Lightning's DistributedSampler pads the
    last share with items from the start, which the metrics would then count twice (500 over 8 ranks: 4
    twice). A warning names what is left out. `what` names the items ("validation problems"), `setting` the
    key that sizes them."""
    extra = len(items) % ranks
    kept = len(items) - extra
    if not extra:
        return items
    if kept == 0:
        raise ConfigError(f"{len(items)} {what} for {ranks} ranks: every rank needs one")
    log.warning(
        "val/* counts %d %s, not %d: %s is not a multiple of the %d ranks, and the sampler's padding would "
        "count %d of them twice",
        kept,
        what,
        len(items),
        setting,
        ranks,
        ranks - extra,
    )
    return items[:kept]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` in rank order (collective: every rank calls it); `[obj]` without a process group."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def same_on_every_rank(value: Any, what: str) -> None:
    """A ConfigError on every rank, naming each rank's value, unless all ranks hold the same `value`
    (collective: every rank calls it; nothing to compare without a process group)."""
    values = gather_objects(value)
    if any(other != values[0] for other in values[1:]):
        held = "; ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
        raise ConfigError(f"the ranks disagree on {what} ({held})")


def sum_over_ranks(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Each value summed over the ranks (collective: every rank calls it); the values without a process
    group. `device`: where the collective's tensor lives (the rank's GPU under NCCL)."""
    if world_size() == 1:
        return list(values)
    total = torch.tensor(list(values), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return total.tolist()


def reduce_over_ranks(
    metrics: dict[str, float],
    how: Callable[[str], str | None],
    counts: dict[str, float] | None = None,
) -> dict[str, float]:
    """Every rank's metrics in one collective (every rank calls it), each reduced as `how(key)` says over
    the ranks that have the key: "sum", "max", "mean", "std", or None for this rank's own value (a key only
    other ranks have is then left out).

    `counts[key]`: how many values a rank's mean `key` is over (1 when not given: ranks with equal shares).
    A "mean" weights each rank's by it, so the result is the mean over every rank's values; a "std" (the
    key of a mean `m` is `m_std`: a sample standard deviation, n - 1) is pooled from each rank's count,
    mean and std, the standard deviation of every rank's values together."""
    if world_size() == 1:
        return metrics
    gathered = gather_objects((metrics, counts or {}))
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for m, _ in gathered for k in m):
        reduction = how(key)
        if reduction is None:
            if key in metrics:
                out[key] = metrics[key]
            continue
        held = [(m, c) for m, c in gathered if key in m]
        values = [m[key] for m, _ in held]
        if reduction == "mean":
            out[key] = _weighted_mean(values, [c.get(key, 1.0) for _, c in held])
        elif reduction == "std":
            out[key] = _pooled_std(key.removesuffix("_std"), held)
        else:
            out[key] = {"sum": sum(values), "max": max(values)}[reduction]
    return out


def _weighted_mean(values: list[float], weights: list[float]) -> float:
    total = sum(weights)
    if total <= 0:  # no rank holds a value (a mean over nothing): the ranks' placeholders, averaged
        return sum(values) / len(values)
    return sum(v * w for v, w in zip(values, weights, strict=True)) / total


def _pooled_std(mean_key: str, held: list[tuple[dict[str, float], dict[str, float]]]) -> float:
    """The sample standard deviation of all ranks' values from each rank's (count, mean, std) of them."""
    parts = [(c.get(mean_key, 1.0), m.get(mean_key, 0.0), m[mean_key + "_std"]) for m, c in held]
    n = sum(count for count, _, _ in parts)
    if n < 2:
        return 0.0
    mean = sum(count * value for count, value, _ in parts) / n
    squares = sum((count - 1) * std**2 + count * (value - mean) ** 2 for count, value, std in parts)
    return math.sqrt(max(squares, 0.0) / (n - 1))
