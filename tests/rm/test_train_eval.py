"""Collation, then `build_groups.py` -> `train_rm` -> `eval_rm` end to end with a tiny backbone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from planlift.errors import ConfigError
from planlift.models import build_char_tokenizer
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm_groups import ProceduralGroupSource, build_groups, read_groups
from planlift.rubric_rm.data import GroupCollator, first_difference
from planlift.tasks import ProceduralTask
from tests.rm.test_rm_configs import compose_primary
from tests.test_configs import load_entry_point

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def groups_dir(tmp_path_factory):
    """`python src/build_groups.py` (the CLI) with small procedural splits."""
    out = tmp_path_factory.mktemp("groups")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "src" / "build_groups.py"), f"output_dir={out}",
               "groups.sizes.train=24", "groups.sizes.dev=8"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["splits"]["dev"]["groups"] == 8
    assert (out / ".hydra" / "config.yaml").is_file()  # the data carries the config that made it
    return out


def tiny_groups(out: Path) -> Path:
    """10 train and 4 dev procedural groups in `out` (the resume and SLURM-requeue runs of a tiny RM)."""
    task = ProceduralTask(sizes={"train": 10, "validation": 4, "test": 0})
    build_groups(ProceduralGroupSource(task, sizes={"train": 10, "dev": 4}), out)
    return out


def tiny_rm(groups_dir: Path) -> list[str]:
    """train_rm overrides: the groups in `groups_dir`, 4 to a batch, under a 32-wide tiny backbone."""
    return [
        f"rm_data.train_path={groups_dir / 'train.jsonl'}",
        f"rm_data.dev_path={groups_dir / 'dev.jsonl'}",
        "rm_data.groups_per_batch=4",
        "rm_data.dev_groups_per_batch=4",
        "rm_backbone.tiny.hidden_size=32",
        "rm_backbone.tiny.intermediate_size=64",
    ]


def test_collator_groups_rows_and_fixes_eval_negatives(tmp_path):
    task = ProceduralTask(sizes={"train": 6, "validation": 2, "test": 0})
    build_groups(ProceduralGroupSource(task, sizes={"train": 6, "dev": 2}), tmp_path)
    groups = read_groups(tmp_path / "train.jsonl", MATH_DIMENSIONS)
    tokenizer = build_char_tokenizer()
    fixed = GroupCollator(tokenizer, MATH_DIMENSIONS, num_negatives=4, max_length=128, seed=5, fixed=True)
    batch = fixed(groups[:3])
    assert batch["input_ids"].shape[0] == 15 and batch["dimension_labels"].shape == (15, 5)
    assert batch["kinds"][0::5] == ["positive"] * 3 and "positive" not in batch["kinds"][1:5]
    assert batch["gold_total"].view(3, 5)[:, 0].tolist() == [1.0, 1.0, 1.0]
    # fixed negatives: the same whatever the batch composition or order
    again = fixed([groups[2], groups[0]])
    assert again["kinds"][:5] == batch["kinds"][10:] and again["kinds"][5:] == batch["kinds"][:5]
    training = GroupCollator(tokenizer, MATH_DIMENSIONS, num_negatives=4, max_length=128, seed=5)
    draws = {tuple(training([groups[0]])["kinds"]) for _ in range(10)}
    assert len(draws) > 1  # training draws fresh negatives each time


@pytest.mark.parametrize("side", ["right", "left"])
def test_reasoning_mask_and_the_reasoning_only_rendering(tmp_path, side):
    task = ProceduralTask(sizes={"train": 4, "validation": 2, "test": 0})
    build_groups(ProceduralGroupSource(task, sizes={"train": 4, "dev": 2}), tmp_path)
    groups = read_groups(tmp_path / "train.jsonl", MATH_DIMENSIONS)
    tokenizer = build_char_tokenizer()
    tokenizer.padding_side = side
    for render in ("full", "reasoning"):
        collator = GroupCollator(
            tokenizer, MATH_DIMENSIONS, num_negatives=4, max_length=256, fixed=True, render=render
        )
        batch = collator(groups)
        for row, (group, kind) in enumerate(
            zip([g for g in groups for _ in range(5)], batch["kinds"], strict=True)
        ):
            candidate = (
                group["positive_pool"][0]
                if kind == "positive"
                else next(n for n in group["negative_bank"] if n["negative_kind"] == kind)
            )
            ids = batch["input_ids"][row][batch["attention_mask"][row] == 1]
            spanned = batch["input_ids"][row][batch["reasoning_mask"][row] == 1]
            tail = "" if render == "reasoning" else "\n</reasoning>"
            assert tokenizer.decode(spanned) == candidate["reasoning"].strip() + tail
            # where the candidate departs from its positive: the same tokens before, a different one there
            positive = batch["input_ids"][row - row % 5][batch["reasoning_mask"][row - row % 5] == 1].tolist()
            start = int(batch["reasoning_mask"][row].nonzero()[0])
            departs = int(batch["departs_at"][row]) - start
            assert spanned[:departs].tolist() == positive[:departs]
            if kind == "positive":
                assert departs == len(spanned)
            else:
                assert departs < len(spanned) and (
                    departs == len(positive) or spanned[departs] != positive[departs]
                )
            text = tokenizer.decode(ids)
            if render == "reasoning":
                assert text == candidate["reasoning"].strip()
            else:
                assert text.startswith("<task>math</task>") and group["problem"] in text
    with pytest.raises(ConfigError, match="rm_data.render"):
        GroupCollator(tokenizer, MATH_DIMENSIONS, render="problem")


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 4]) == 2
    assert first_difference([1, 2], [1, 2, 3]) == 2  # a prefix of the reference: never departs
    assert first_difference([1, 2, 3], [1, 2, 3]) == 3
    assert first_difference([1, 2, 3, 4], [1, 2]) == 2  # goes on past the reference's end


def test_train_then_evaluate(tmp_path, groups_dir):
    from planlift.rubric_rm.evaluation import RMEvaluation
    from planlift.rubric_rm.report import results_table

    entry = load_entry_point("train_rm")  # the entry point's own function, run in this process

    overrides = [
        *tiny_rm(groups_dir),
        "rm_backbone.tiny.num_hidden_layers=1",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "torch_threads=1",
        "module.lm_weight=0.5",
        "module.prefix_weight=0.5",
        "logger.tensorboard.name=rm",
    ]
    cfg = compose_primary("train_rm", overrides, tmp_path)
    metric = entry.train_rm(cfg)
    assert metric is not None and 0 <= metric <= 1
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4  # the latest state, whether or not the last validation improved
    exported = tmp_path / "reward_model"
    assert (exported / "config.json").is_file() and (exported / "tokenizer.json").is_file()

    from tbparse import SummaryReader

    logged = SummaryReader(str(tmp_path / "tensorboard" / "rm")).scalars
    tags = set(logged.tag)
    for tag in ("train/loss", "train/loss/dim", "train/loss/total", "train/loss/posneg", "train/loss/lm",
                "train/loss/prefix",
                "train/pairwise_acc",
                "val/pairwise_acc", "val/group_acc", "val/score_mae", "val/score_rmse", "val/total_mae", "val/loss",
                "val/dim_acc/calculation_correctness", "val/pair_acc/skipped_step"):  # fmt: skip
        assert tag in tags, tag
    validations = sorted(logged[logged.tag == "val/pairwise_acc"].step.tolist())
    assert len(validations) == 3 and validations[0] == 0  # before training, then every 2 steps
    assert torch.isfinite(torch.tensor(logged[logged.tag == "train/loss"].value.tolist())).all()

    evaluation = RMEvaluation(
        str(exported),
        dev_groups=str(groups_dir / "dev.jsonl"),
        limits={"processbench_gsm8k": 30, "processbench_math": 30, "bbm_multistep_arithmetic": 30},
        max_length=256,
        device="cpu",
    )
    results = evaluation.run()
    assert set(results["heldout"]) == {"processbench_gsm8k", "processbench_math", "bbm_multistep_arithmetic"}
    for numbers in results["heldout"].values():
        assert 0 <= numbers["auroc"] <= 1 and numbers["items"] == 30 and numbers["correct"] > 0
        assert numbers["cut_problem"] + numbers["cut_reasoning"] > 0  # 256 characters: long traces are cut
    assert 0 <= results["dev"]["pairwise_acc"] <= 1 and "dim_acc/answer_support" in results["dev"]
    # first-error metrics: the threshold from the dev groups, applied to every held-out set
    dev = results["dev"]
    assert dev["first_error/traces"] > len(read_groups(groups_dir / "dev.jsonl", MATH_DIMENSIONS))
    assert 0 <= dev["first_error/f1"] <= 1 and np.isfinite(dev["first_error/threshold"])
    for numbers in results["heldout"].values():
        assert {"first_error_f1", "first_error_error_acc", "first_error_correct_acc"} <= numbers.keys()
        assert all(0 <= numbers[f"first_error_{k}"] <= 1 for k in ("f1", "error_acc", "correct_acc"))
    probe = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_trace_lm.py"), str(exported), str(groups_dir / "dev.jsonl")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    digits = json.loads(probe.stdout)  # 8 dev traces of 4 computed steps: 2 operands, 1 op, 1 value each
    assert digits["operand_digits"] == 2 * digits["value_digits"] == 2 * digits["op_digits"] == 2 * 8 * 4
    assert all(0 <= digits[f"{kind}_acc"] <= 1 for kind in ("operand", "op", "value"))

    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(results_table(results))
    text = console.export_text()
    assert "AUROC" in text and "pairwise_acc" in text and "processbench_gsm8k" in text
    assert "first-error F1" in text


def test_train_from_the_bootstrap_planner(tmp_path, groups_dir):
    """rm_backbone=tiny_pretrained through the entry point: the bootstrap is built from the task config
    (here a 10-step one in a private cache) and its planner becomes the RM's backbone."""
    entry = load_entry_point("train_rm")
    overrides = [
        "rm_backbone=tiny_pretrained",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.bootstrap_dir={tmp_path / 'cache' / 'bootstrap'}",  # private whatever PLANLIFT_BOOTSTRAP_CACHE
        "bootstrap.architecture.hidden_size=32",
        "bootstrap.architecture.intermediate_size=64",
        "bootstrap.executor.steps=10",
        "bootstrap.planner.steps=10",
        "bootstrap.eval_problems=4",
        "bootstrap.accelerator=cpu",
        "task.sizes.train=40",
        f"rm_data.train_path={groups_dir / 'train.jsonl'}",
        f"rm_data.dev_path={groups_dir / 'dev.jsonl'}",
        "rm_data.groups_per_batch=4",
        "rm_data.dev_groups_per_batch=4",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "torch_threads=1",
        "callbacks.model_checkpoint.save_last=false",
    ]
    cfg = compose_primary("train_rm", overrides, tmp_path)
    metric = entry.train_rm(cfg)
    assert metric is not None and 0 <= metric <= 1
    planners = list((tmp_path / "cache" / "bootstrap").glob("*/planner/config.json"))
    assert len(planners) == 1
    exported = json.loads((tmp_path / "reward_model" / "config.json").read_text())
    assert exported["hidden_size"] == 32 and exported["rm_dimension_names"] == list(MATH_DIMENSIONS)


@pytest.mark.slow
def test_the_best_checkpoints_rm_is_exported_on_request(tmp_path, groups_dir):
    """callbacks.export_reward_model.weights=best: the exported heads are model_checkpoint's best file's."""
    from safetensors.torch import load_file

    entry = load_entry_point("train_rm")
    overrides = [
        *tiny_rm(groups_dir),
        "rm_backbone.tiny.num_hidden_layers=1",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "torch_threads=1",
        "callbacks.export_reward_model.weights=best",
    ]
    entry.train_rm(compose_primary("train_rm", overrides, tmp_path))
    provenance = json.loads((tmp_path / "reward_model" / "planlift_export.json").read_text())
    best = torch.load(provenance["checkpoint"], weights_only=False)
    assert provenance["weights"] == "best" and provenance["step"] == best["global_step"] in (2, 4)
    assert provenance["monitor"] == "val/pairwise_acc"
    exported = load_file(tmp_path / "reward_model" / "model.safetensors")
    heads = [key for key in exported if not key.startswith("model.")]
    assert heads
    for key in heads:  # the heads are trained as they are exported (the LoRA backbone is merged)
        assert torch.equal(exported[key], best["state_dict"][f"model.{key}"]), key


def test_missing_groups_file_is_a_clear_error(tmp_path):
    from planlift.errors import DataError
    from planlift.rubric_rm.data import GroupsDataModule

    data = GroupsDataModule(
        str(tmp_path / "none.jsonl"), str(tmp_path / "dev.jsonl"), build_char_tokenizer(), MATH_DIMENSIONS
    )
    with pytest.raises(DataError, match=rf"{tmp_path}/none.jsonl: no such data file .*build_groups.py"):
        data.setup("fit")


def test_lm_warmup_stages_then_the_rm(tmp_path, groups_dir):
    """rm_stage=lm_reasoning -> lm_full from its export -> dense_rubric from that one (the tiny recipe)."""
    entry = load_entry_point("train_rm")
    from tbparse import SummaryReader

    common = [
        f"rm_data.train_path={groups_dir / 'train.jsonl'}",
        f"rm_data.dev_path={groups_dir / 'dev.jsonl'}",
        "rm_data.groups_per_batch=4",
        "rm_data.dev_groups_per_batch=4",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "torch_threads=1",
        "logger.tensorboard.name=rm",
    ]
    tiny = ["rm_backbone.tiny.hidden_size=32", "rm_backbone.tiny.intermediate_size=64",
            "rm_backbone.tiny.num_hidden_layers=1"]  # fmt: skip
    previous = None
    for stage in ("lm_reasoning", "lm_full", "dense_rubric"):
        out = tmp_path / stage
        overrides = [*common, f"rm_stage={stage}"]
        overrides += [f"rm_backbone.pretrained={previous}"] if previous else tiny
        cfg = compose_primary("train_rm", overrides, out)
        entry.train_rm(cfg)
        logged = SummaryReader(str(out / "tensorboard" / "rm")).scalars
        total = logged[logged.tag == "train/loss"].value.tolist()
        if stage.startswith("lm_"):  # only the LM term counts; the rubric terms are logged at weight 0
            assert total == pytest.approx(logged[logged.tag == "train/loss/lm"].value.tolist())
            assert total[-1] > 0 and "train/loss/prefix" not in set(logged.tag)
        else:
            assert {"train/loss/lm", "train/loss/prefix", "train/loss/posneg"} <= set(logged.tag)
        previous = out / "reward_model"
        assert (previous / "model.safetensors").is_file()


def test_warmup_script_is_deterministic_and_feeds_the_dense_stage(tmp_path, groups_dir):
    """scripts/warmup_trace_lm.py twice gives the same bytes; its export trains under rm_stage=dense_rubric."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        command = [sys.executable, str(ROOT / "scripts" / "warmup_trace_lm.py"), str(groups_dir / "train.jsonl"),
                   str(out), "--reasoning-steps", "2", "--full-steps", "2", "--batch", "4"]  # fmt: skip
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "(full) loss" in result.stderr or "(reasoning) loss" in result.stderr
        outs.append((out / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]
    entry = load_entry_point("train_rm")
    overrides = [
        "rm_stage=dense_rubric",
        f"rm_backbone.pretrained={tmp_path / 'a'}",
        f"rm_data.train_path={groups_dir / 'train.jsonl'}",
        f"rm_data.dev_path={groups_dir / 'dev.jsonl'}",
        "rm_data.groups_per_batch=2",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "torch_threads=1",
    ]
    metric = entry.train_rm(compose_primary("train_rm", overrides, tmp_path / "rm"))
    assert 0 <= metric <= 1 and (tmp_path / "rm" / "reward_model" / "model.safetensors").is_file()
