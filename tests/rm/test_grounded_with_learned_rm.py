"""Slow tier: the whole reward-model path through the CLIs, ending in a grounded GRPO run that scores its
rollouts with the learned tiny RM (build_groups.py -> train_rm.py -> train.py rm=learned)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_train_e2e import scalars, train

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *overrides: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "src" / script), *overrides]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.mark.slow
def test_grpo_with_the_learned_rm(tmp_path, cache_dir):
    groups = tmp_path / "groups"
    run("build_groups.py", f"output_dir={groups}", "groups.sizes.train=64", "groups.sizes.dev=16")
    rm_run = tmp_path / "rm_run"
    run(
        "train_rm.py",
        f"hydra.run.dir={rm_run}",
        f"rm_data.train_path={groups / 'train.jsonl'}",
        f"rm_data.dev_path={groups / 'dev.jsonl'}",
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "torch_threads=1",
    )
    reward_model = rm_run / "reward_model"
    assert (reward_model / "model.safetensors").is_file()

    output = tmp_path / "rm_eval.json"
    # 10 items of each held-out set hold both classes; inputs cut at 512 tokens (48 s -> 22 s)
    limits = [
        f"evaluation.limits.{name}=10"
        for name in ("processbench_gsm8k", "processbench_math", "bbm_multistep_arithmetic")
    ]
    printed = run("eval_rm.py", f"rm_path={reward_model}", f"dev_groups={groups / 'dev.jsonl'}", f"output={output}",
                  f"hydra.run.dir={tmp_path / 'eval'}", "evaluation.max_length=512", *limits)  # fmt: skip
    results = json.loads(output.read_text())
    assert set(results["heldout"]) == {"processbench_gsm8k", "processbench_math", "bbm_multistep_arithmetic"}
    assert "AUROC" in printed and 0 <= results["dev"]["pairwise_acc"] <= 1
    for name, heldout in results["heldout"].items():
        assert heldout["items"] == 10 and heldout["correct"] > 0 and heldout["flawed"] > 0, name
        assert 0 <= heldout["auroc"] <= 1, name

    run_dir = tmp_path / "grpo"
    train(
        run_dir,
        cache_dir,
        "reward=grounded",
        "rm=learned",
        f"rm.path={reward_model}",
        "rm.device=cpu",
    )
    logged = scalars(run_dir)
    rm_values = torch.tensor([value for _, value in logged["train/reward/rm"]])
    assert len(rm_values) == 4 and ((rm_values > 0) & (rm_values < 1)).all()
    assert all(value == 0 for _, value in logged["train/reward/masked"])
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
