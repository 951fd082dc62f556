"""Reward variants: what each `reward.mode` needs (uplift, an RM) and how it turns a sample's terms into
its reward. One small object per variant, chosen by name (`VARIANTS[mode]`); the pipeline
(`planlift.rewards.grounded`) computes the terms, the variant composes them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from planlift.rewards import formulas
from planlift.tasks.base import Verdict


@dataclass(frozen=True)
class Weights:
    """The formulas' constants (`reward.*`): math weights and clamps, the code formula's settings."""

    e2e: float = 0.5
    reasoning: float = 0.5
    rm_bounds: Sequence[float] = (0.0, 1.0)
    code_pass: float = 0.8
    code_rm: float = 0.2
    code_tie_coefficients: Sequence[float] = (0.0, 0.5, 2 / 3, 1.0)
    code_pass_credit: str = "pass_rate"


class RewardVariant(abc.ABC):
    uses_uplift: bool = False  # needs w (k executor samples with the reasoning) and b (the baseline)
    uses_rm: bool = False  # needs the reasoning RM's score

    @abc.abstractmethod
    def compose(self, terms: dict[str, float], e2e_verdict: Verdict, weights: Weights) -> float:
        """The reward from `terms` (e2e, and w / b / uplift / rm when used); may add terms it derives."""


class ExecOnly(RewardVariant):
    """The outcome-only baseline: reward = e2e."""

    def compose(self, terms, e2e_verdict, weights):
        return terms["e2e"]


class Grounded(RewardVariant):
    """TraceLift math: e2e_weight * e2e + reasoning_weight * clamp(rm) * uplift."""

    uses_uplift = uses_rm = True

    def compose(self, terms, e2e_verdict, weights):
        return formulas.grounded_reward(
            terms["e2e"], terms["rm"], terms["uplift"], weights.e2e, weights.reasoning, weights.rm_bounds
        )


class UpliftOnly(RewardVariant):
    """Ablation: the uplift alone as the reasoning reward (no rubric)."""

    uses_uplift = True

    def compose(self, terms, e2e_verdict, weights):
        return formulas.uplift_only_reward(terms["e2e"], terms["uplift"], weights.e2e, weights.reasoning)


class RmOnly(RewardVariant):
    """Ablation: the rubric alone, not grounded in what the executor does with the reasoning."""

    uses_rm = True

    def compose(self, terms, e2e_verdict, weights):
        return formulas.rm_only_reward(
            terms["e2e"], terms["rm"], weights.e2e, weights.reasoning, weights.rm_bounds
        )


class CodeGated(RewardVariant):
    """TraceLift code: clamp(exec + code_rm * clamp(rm) * coeff); the gate compares success counts with and
    without the reasoning (adds the terms `exec` and `coeff`)."""

    uses_uplift = uses_rm = True

    def compose(self, terms, e2e_verdict, weights):
        terms["exec"] = formulas.code_exec_score(
            e2e_verdict, weights.code_pass, pass_credit=weights.code_pass_credit
        )
        terms["coeff"] = formulas.code_uplift_coefficient(
            terms["w"], terms["b"], weights.code_tie_coefficients
        )
        return formulas.code_gated_reward(
            terms["exec"], terms["rm"], terms["coeff"], weights.code_rm, weights.rm_bounds
        )


VARIANTS: dict[str, RewardVariant] = {
    "exec_only": ExecOnly(),
    "grounded": Grounded(),
    "uplift_only": UpliftOnly(),
    "rm_only": RmOnly(),
    "code_gated": CodeGated(),
}
