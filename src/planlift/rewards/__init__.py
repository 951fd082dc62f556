"""Rewards: pure formulas, per-sample records, and the executor-grounded pipeline."""

from planlift.lazy import lazy_exports

EXPORTS = {
    "MODES": "grounded",
    "TERMS": "records",
    "ExecutorGroundedReward": "grounded",
    "RewardBatch": "records",
    "RewardRecord": "records",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
