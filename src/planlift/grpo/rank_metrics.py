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
    "loss",
    "policy_loss",
    "kl",
    "clip_fraction",
    "entropy",
    "completion_length",
    "advantage_abs",
)


def batch_reduction(key: str) -> str | None:
    """How a train/* metric combines over the ranks: masked counts add up, a `*_max` takes the largest,
    the other batch statistics average (the ranks hold equal shares); timings, the counters of a rank's
    own executor and engine, and the learning rate stay rank 0's (None)."""
    name = key.removeprefix("train/")
    if not name.startswith(_BATCH_STATISTICS):
        return None
    if name.startswith("reward/masked") and not name.endswith("_frac"):
        return "sum"
    return "max" if name.endswith("_max") else "mean"
