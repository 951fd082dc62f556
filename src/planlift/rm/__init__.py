"""Reasoning reward models: batched rubric scores for (problem, reasoning) pairs."""

from planlift.rm.base import CODE_DIMENSIONS, MATH_DIMENSIONS, ReasoningRM, RMItem, rubric_score
from planlift.rm.simple import ConstantRM, OracleRM

__all__ = [
    "CODE_DIMENSIONS",
    "MATH_DIMENSIONS",
    "ConstantRM",
    "OracleRM",
    "RMItem",
    "ReasoningRM",
    "rubric_score",
]
