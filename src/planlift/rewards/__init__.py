"""Rewards: pure formulas, per-sample records, and the executor-grounded pipeline."""

from planlift.rewards.grounded import MODES, BaselineCache, ExecutorGroundedReward, executor_baseline
from planlift.rewards.records import TERMS, RewardBatch, RewardRecord

__all__ = [
    "MODES",
    "TERMS",
    "BaselineCache",
    "ExecutorGroundedReward",
    "RewardBatch",
    "RewardRecord",
    "executor_baseline",
]
