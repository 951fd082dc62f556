"""Reasoning reward models as the reward sees them: batched rubric scores for (problem, reasoning) pairs.

The interface (`base`) and its backends: `simple` (constant, oracle), `learned` (a trained rubric RM in
process) and `http` (a scoring service). Building and training the rubric RM is its own application,
`planlift.rubric_rm`; its training data comes from `planlift.rm_groups`.
"""

from planlift.lazy import lazy_exports

EXPORTS = {
    "CODE_DIMENSIONS": "base",
    "MATH_DIMENSIONS": "base",
    "ConstantRM": "simple",
    "HttpRM": "http",
    "LearnedRM": "learned",
    "OracleRM": "simple",
    "RMItem": "base",
    "ReasoningRM": "base",
    "rubric_score": "base",
}
__all__ = list(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
