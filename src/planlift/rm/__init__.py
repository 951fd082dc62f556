"""Reasoning reward models: batched rubric scores for (problem, reasoning) pairs.

Interface and simple RMs (base, simple); the learned rubric RM (model, inputs, learned), its data
(groups), training (data, losses, training, metrics), evaluation (heldout, evaluation) and serving
(service, http).
"""

from planlift.rm.base import CODE_DIMENSIONS, MATH_DIMENSIONS, ReasoningRM, RMItem, rubric_score
from planlift.rm.http import HttpRM
from planlift.rm.learned import LearnedRM
from planlift.rm.simple import ConstantRM, OracleRM

__all__ = [
    "CODE_DIMENSIONS",
    "MATH_DIMENSIONS",
    "ConstantRM",
    "HttpRM",
    "LearnedRM",
    "OracleRM",
    "RMItem",
    "ReasoningRM",
    "rubric_score",
]
