"""Reward formulas as pure functions (as the authors' code computes them: math "reason_exec" and code).

Math:  reward = e2e_weight * e2e + reasoning_weight * clamp(rm, 0, 1) * uplift,
       uplift = clamp(w - b, -1, 1)   (w: success rate with the reasoning, b: without)
Code:  exec = 0.8 * pass_rate + bonus;  reward = clamp(exec + 0.2 * clamp(rm, 0, 1) * coeff, 0, 1)
       (pass credit "all_tests": 0.8 * [every test passes] in place of 0.8 * pass_rate)
"""

from __future__ import annotations

from collections.abc import Sequence

from planlift.tasks.base import Verdict


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def success_rate(verdicts: Sequence[Verdict]) -> float:
    return sum(v.correct for v in verdicts) / len(verdicts)


def uplift(with_rate: float, without_rate: float, bounds: Sequence[float] = (-1.0, 1.0)) -> float:
    """Executor success with the reasoning minus without it, clamped."""
    return clamp(with_rate - without_rate, bounds[0], bounds[1])


def grounded_reward(
    e2e: float,
    rm: float,
    uplift_value: float,
    e2e_weight: float = 0.5,
    reasoning_weight: float = 0.5,
    rm_bounds: Sequence[float] = (0.0, 1.0),
) -> float:
    """TraceLift: end-to-end correctness plus the rubric score times the executor uplift."""
    return e2e_weight * e2e + reasoning_weight * clamp(rm, rm_bounds[0], rm_bounds[1]) * uplift_value


def uplift_only_reward(
    e2e: float, uplift_value: float, e2e_weight: float = 0.5, reasoning_weight: float = 0.5
) -> float:
    """Ablation: the reasoning reward is the uplift alone (no rubric)."""
    return e2e_weight * e2e + reasoning_weight * uplift_value


def rm_only_reward(
    e2e: float,
    rm: float,
    e2e_weight: float = 0.5,
    reasoning_weight: float = 0.5,
    rm_bounds: Sequence[float] = (0.0, 1.0),
) -> float:
    """Ablation: the rubric score alone, not grounded in what the executor does with the reasoning."""
    return e2e_weight * e2e + reasoning_weight * clamp(rm, rm_bounds[0], rm_bounds[1])


# The authors' execution bonus by program status: ran (passed or only failed tests), crashed/timed out,
# never ran (syntax error) or nothing to test.
CODE_STATUS_BONUS = {
    "correct": 0.2,
    "failed_tests": 0.2,
    "runtime_error": 0.05,
    "timeout": 0.05,
    "syntax_error": 0.0,
    "no_tests": 0.0,
}


# How the code formula credits passed tests: the authors' share of tests passed, or nothing short of all.
CODE_PASS_CREDITS = ("pass_rate", "all_tests")


def code_exec_score(
    verdict: Verdict,
    pass_weight: float = 0.8,
    status_bonus: dict[str, float] | None = None,
    pass_credit: str = "pass_rate",
) -> float:
    """exec = 0.8 * pass_rate + bonus (bonus by run status; a status without a bonus is an error: a
    verdict that is not a program run's, or a sandbox failure that should have been masked).

    pass_credit "all_tests" pays the 0.8 only for a program that passes every test. Under "pass_rate" a
    program that ignores its input can earn most of it where a task's tests are one-sided (most expected
    outputs False, say): a reward a policy can collect without solving the problem."""
    if pass_credit not in CODE_PASS_CREDITS:
        raise ValueError(f"pass_credit must be one of {list(CODE_PASS_CREDITS)}, got {pass_credit!r}")
    table = status_bonus or CODE_STATUS_BONUS
    if verdict.status not in table:
        raise ValueError(
            f"no execution bonus for the program status {verdict.status!r} (known: {list(table)}): the code "
            "formula scores code tasks' verdicts only"
        )
    credit = verdict.pass_rate if pass_credit == "pass_rate" else float(verdict.correct)
    return pass_weight * credit + table[verdict.status]


def code_uplift_coefficient(
    with_rate: float, without_rate: float, tie_coefficients: Sequence[float]
) -> float:
    """+1 if the reasoning helps, -1 if it hurts; on a tie, a bonus growing with the shared success rate.

    tie_coefficients[j] is the coefficient when both arms succeed j times out of len(tie_coefficients) - 1
    (authors, 3 samples each: 0, 0.5, 2/3, 1).
    """
    if with_rate > without_rate:
        return 1.0
    if with_rate < without_rate:
        return -1.0
    return tie_coefficients[round(with_rate * (len(tie_coefficients) - 1))]


def code_gated_reward(
    exec_score: float,
    rm: float,
    coefficient: float,
    rm_weight: float = 0.2,
    rm_bounds: Sequence[float] = (0.0, 1.0),
) -> float:
    return clamp(exec_score + rm_weight * clamp(rm, rm_bounds[0], rm_bounds[1]) * coefficient, 0.0, 1.0)
