import pytest

from planlift.rewards import formulas
from planlift.tasks.base import Verdict


def test_grounded_reward_exact_values():
    assert formulas.grounded_reward(e2e=1.0, rm=0.8, uplift_value=2 / 3) == pytest.approx(
        0.5 + 0.5 * 0.8 * 2 / 3
    )
    assert formulas.grounded_reward(e2e=0.0, rm=1.0, uplift_value=-1.0) == -0.5  # the range floor
    assert formulas.grounded_reward(e2e=1.0, rm=1.0, uplift_value=1.0) == 1.0  # the range ceiling
    assert formulas.grounded_reward(e2e=0.0, rm=1.7, uplift_value=0.5) == 0.25  # rm clamped to 1


def test_uplift_clamps():
    assert formulas.uplift(1.0, 0.0) == 1.0
    assert formulas.uplift(0.25, 0.75) == -0.5
    assert formulas.uplift(1.0, 0.0, bounds=(-0.5, 0.5)) == 0.5


def test_ablation_formulas():
    assert formulas.uplift_only_reward(1.0, -1 / 3) == pytest.approx(0.5 - 1 / 6)
    assert formulas.rm_only_reward(0.0, 0.6) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("status", "pass_rate", "expected"),
    [
        ("correct", 1.0, 1.0),
        ("failed_tests", 0.5, 0.6),
        ("runtime_error", 0.0, 0.05),
        ("timeout", 0.25, 0.25),
        ("syntax_error", 0.0, 0.0),
        ("no_tests", 0.0, 0.0),
    ],
)
def test_code_exec_score(status, pass_rate, expected):
    verdict = Verdict(correct=pass_rate == 1.0, pass_rate=pass_rate, status=status)
    assert formulas.code_exec_score(verdict) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("status", "pass_rate", "expected"),
    [("correct", 1.0, 1.0), ("failed_tests", 0.9, 0.2), ("runtime_error", 0.5, 0.05), ("syntax_error", 0, 0)],
)
def test_all_tests_credit_pays_the_pass_weight_only_when_every_test_passes(status, pass_rate, expected):
    verdict = Verdict(correct=pass_rate == 1.0, pass_rate=pass_rate, status=status)
    assert formulas.code_exec_score(verdict, pass_credit="all_tests") == pytest.approx(expected)
    with pytest.raises(ValueError, match="pass_credit must be one of"):
        formulas.code_exec_score(verdict, pass_credit="most")


@pytest.mark.parametrize("status", ["wrong", "no_answer", "sandbox_error"])
def test_code_exec_score_refuses_a_status_without_a_bonus(status):
    with pytest.raises(ValueError, match=f"program status '{status}'"):
        formulas.code_exec_score(Verdict(correct=False, pass_rate=0.0, status=status))


TIES = (0.0, 0.5, 2 / 3, 1.0)


@pytest.mark.parametrize(
    ("with_rate", "without_rate", "expected"),
    [
        (2 / 3, 1 / 3, 1.0),
        (0.0, 1 / 3, -1.0),
        (0.0, 0.0, 0.0),
        (1 / 3, 1 / 3, 0.5),
        (2 / 3, 2 / 3, 2 / 3),
        (1.0, 1.0, 1.0),
    ],
)
def test_code_coefficient_table(with_rate, without_rate, expected):
    assert formulas.code_uplift_coefficient(with_rate, without_rate, TIES) == pytest.approx(expected)


def test_code_gated_reward_clamps_the_rm_score_to_rm_bounds():
    assert formulas.code_gated_reward(0.5, 0.9, 1.0, rm_weight=0.2) == pytest.approx(0.68)
    assert formulas.code_gated_reward(0.5, 0.9, 1.0, rm_weight=0.2, rm_bounds=(0.0, 0.5)) == pytest.approx(
        0.6
    )


def test_code_gated_reward_clamps_to_unit_interval():
    assert formulas.code_gated_reward(1.0, 1.0, 1.0) == 1.0
    assert formulas.code_gated_reward(0.05, 1.0, -1.0) == 0.0
    assert formulas.code_gated_reward(0.6, 0.5, 0.5) == pytest.approx(0.65)
