import pytest

from planlift.rewards import RewardBatch, RewardRecord


def test_metrics_keys_and_group_health():
    records = [
        RewardRecord(e2e=1.0, w=1.0, b=0.0, uplift=1.0, rm=1.0, leakage=0.0, final=1.0),
        RewardRecord(e2e=0.0, w=0.0, b=0.0, uplift=0.0, rm=1.0, leakage=0.0, final=0.0),
        RewardRecord(e2e=0.0, w=0.0, b=1.0, uplift=-1.0, rm=1.0, leakage=0.0, final=-0.5),
        RewardRecord(e2e=0.0, leakage=1.0, mask_reason="executor_error"),
    ]
    batch = RewardBatch(records, group_size=2)
    metrics = batch.metrics("train")
    for term in ("e2e", "w", "b", "uplift", "rm", "leakage", "final"):
        assert f"train/reward/{term}" in metrics and f"train/reward/{term}_std" in metrics
    assert metrics["train/reward/final"] == pytest.approx(0.5 / 3)
    # group 1 (rewards 1, 0) has the sample std 0.707 its advantages use; group 2 one unmasked sample
    assert metrics["train/reward_std"] == pytest.approx(0.5**0.5)
    assert metrics["train/frac_reward_zero_std"] == 0.0
    assert metrics["train/frac_groups_without_signal"] == 0.5  # group 2: no second sample to compare with
    assert metrics["train/reward/masked"] == 1.0 and metrics["train/reward/masked_frac"] == 0.25
    assert batch.rewards.tolist() == [1.0, 0.0, -0.5, 0.0]
    assert batch.mask.tolist() == [True, True, True, False]


def test_the_raw_uplift_is_logged_beside_the_clamped_term_the_formula_used():
    """Under grounded_guarded (uplift_bounds [0, 1]) a reasoning that hurts the executor enters the formula
    as 0; uplift_raw keeps w - b, comparable with val/uplift."""
    records = [
        RewardRecord(e2e=0.0, w=0.0, b=2 / 3, uplift=0.0, rm=1.0, leakage=0.0, final=0.0),
        RewardRecord(e2e=1.0, w=1.0, b=2 / 3, uplift=1 / 3, rm=1.0, leakage=0.0, final=0.7),
    ]
    metrics = RewardBatch(records, group_size=2).metrics("train")
    assert metrics["train/reward/uplift"] == pytest.approx(1 / 6)
    assert metrics["train/reward/uplift_raw"] == pytest.approx(-1 / 6)
    assert "train/reward/uplift_raw" not in RewardBatch([RewardRecord(final=1.0)] * 2, 2).metrics()


def test_a_group_of_equal_rewards_counts_as_zero_std_whatever_the_float_mean():
    """The mean of eight rewards of 0.1 is not exactly 0.1, so their float std is 1.4e-17, not 0; the group
    still carries no signal (group_advantages gives it 0) and must count in frac_reward_zero_std."""
    records = [RewardRecord(final=0.1)] * 8 + [RewardRecord(final=float(i % 2)) for i in range(8)]
    metrics = RewardBatch(records, group_size=8).metrics()
    assert metrics["train/frac_reward_zero_std"] == 0.5


def test_every_mask_reason_is_logged_every_step_zeros_included():
    """Lightning repeats a step metric's last value in a step that does not log it: a reason absent from
    this step must read 0, not the count of the last step that had it."""
    metrics = RewardBatch([RewardRecord(final=1.0), RewardRecord(mask_reason="rm_error")], 2).metrics()
    masked = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if k.startswith("train/reward/masked/")}
    assert masked == {
        "executor_error": 0.0,
        "baseline_executor_error": 0.0,
        "sandbox_error": 0.0,
        "rm_error": 1.0,
        "rm_non_finite": 0.0,
        "leakage": 0.0,
    }


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="groups of 2"):
        RewardBatch([RewardRecord(final=1.0)] * 3, group_size=2)


def test_terms_judged_before_a_mask_still_count():
    """Under leakage_policy=mask a leaking sample has no reward, but it did leak and was judged: with 3 of
    4 samples leaking, `leakage` reads 0.75 (it read 0 when only unmasked samples counted)."""
    records = [RewardRecord(e2e=1.0, leakage=1.0, mask_reason="leakage")] * 3
    records.append(RewardRecord(e2e=0.0, leakage=0.0, final=0.0))
    metrics = RewardBatch(records, 4).metrics()
    assert metrics["train/reward/leakage"] == 0.75 and metrics["train/reward/e2e"] == 0.75
    assert metrics["train/reward/final"] == 0.0 and metrics["train/reward/masked/leakage"] == 3.0
