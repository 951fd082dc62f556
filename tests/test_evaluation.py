"""Judging helpers of planlift.evaluation."""

import pytest

from planlift.evaluation import EvalRecord, pass_at_k


def test_pass_at_k_counts_problems_with_any_success():
    def record(e2e):
        return EvalRecord("p", "r", ("x",), e2e, 0.0, 0.0)

    records = [record(0.0), record(1.0), record(0.0), record(0.0), record(None), record(0.0)]
    assert pass_at_k(records, 2) == pytest.approx(1 / 3)  # [0, 1] [0, 0] [failed, 0]
    assert pass_at_k(records, 3) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="groups of 4"):
        pass_at_k(records, 4)
