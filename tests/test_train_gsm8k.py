"""Slow: a short grounded GRPO run on GSM8K with the real SmolLM2-135M planner (LoRA) and executor."""

from __future__ import annotations

import pytest

from tests.test_train_e2e import scalars, train_preset

pytestmark = pytest.mark.slow


def test_grounded_grpo_on_gsm8k_with_smollm2(tmp_path):
    run_dir = tmp_path / "run"
    result = train_preset(
        run_dir,
        "experiment=gsm8k_smollm2",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "validate_before_training=false",  # the validation after step 2 judges the same way
        "data.val_problems=4",
        "data.val_batch_size=4",
        "algorithm.num_generations=2",
        "algorithm.max_new_tokens=48",
        "reward.repeats=1",
        "reward.baseline_samples=2",
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    logged = scalars(run_dir)
    for tag in (
        "train/reward/final",
        "train/reward/uplift",
        "train/reward/leakage",
        "train/loss",
        "val/e2e_acc",
    ):
        assert tag in logged, tag
    assert [step for step, _ in logged["train/loss"]] == [0, 1]
    assert (run_dir / "planner_hf").is_dir()


def test_gsm8k_with_the_oracle_rm_is_a_clear_error(tmp_path):
    result = train_preset(
        tmp_path,
        "experiment=gsm8k_smollm2",
        "rm=oracle",
        "validate_before_training=false",
        "trainer.max_steps=1",
        "algorithm.num_generations=2",
        "algorithm.max_new_tokens=8",
        timeout=900,
    )
    assert result.returncode == 2
    assert "rm=oracle needs ground-truth states" in result.stderr
