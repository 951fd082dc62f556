"""Which train/* metrics describe the whole batch under DDP / FSDP, and how the ranks' values combine.

A module of its own (no model, no Lightning imports): the processes a two-rank test spawns import it.
"""

from __future__ import annotations

# What each rank measures on its own share of the batch (DDP / FSDP): one value for the whole batch.
_BATCH_STATISTICS = (
    "reward/",
    "trace/",
    "rollout/logprob_abs_diff",
    "rollout/is_",
    "reward_std",
    "frac_reward_zero_std",
    "frac_groups_without_signal",
    "loss",
    "policy_loss",
    "kl",
    "clip_fraction",
    "entropy",
    "completion_length",
    "advantage_abs",
)


def batch_reduction(key: str) -> str | None:
    """How a train/* metric combines over the ranks: masked counts add up, a `*_max` takes the largest, a
    reward term's `*_std` is pooled, the other batch statistics average, weighted by how many values each
    rank's is over (`planlift.distributed.reduce_over_ranks`); timings, the counters of a rank's own
    executor and engine, and the learning rate stay rank 0's (None)."""
    name = key.removeprefix("train/")
    if not name.startswith(_BATCH_STATISTICS):
        return None
    if name.startswith("reward/masked") and not name.endswith("_frac"):
        return "sum"
    if name.startswith("reward/") and name.endswith("_std"):
        return "std"
    return "max" if name.endswith("_max") else "mean"
