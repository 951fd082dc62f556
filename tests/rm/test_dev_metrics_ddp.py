"""The RM's dev metrics under DDP are the whole dev set's: two gloo ranks (ddp_spawn) log what one
process logs, so the checkpoint monitor (val/pairwise_acc) does not pick checkpoints on rank 0's half."""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from planlift.models import build_char_tokenizer
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm_groups import ProceduralGroupSource, build_groups
from planlift.rubric_rm.data import GroupsDataModule
from planlift.rubric_rm.model import build_reward_model
from planlift.rubric_rm.training import RubricRMModule
from planlift.tasks import ProceduralTask
from tests.rm.conftest import TINY

pytestmark = pytest.mark.slow


def data_module(groups_dir, tokenizer) -> GroupsDataModule:
    return GroupsDataModule(
        str(groups_dir / "train.jsonl"),
        str(groups_dir / "dev.jsonl"),
        tokenizer,
        list(MATH_DIMENSIONS),
        num_negatives=3,
        dev_groups_per_batch=2,
        max_length=256,
    )


def validate(groups_dir, devices: int) -> dict[str, float]:
    pl.seed_everything(0, verbose=False)
    model = build_reward_model(tiny=TINY, seed=1)
    with torch.no_grad():  # heads far from zero, so scores differ across traces
        for head in [*model.dimension_heads, model.total_head]:
            head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    module = RubricRMModule(model, functools.partial(torch.optim.AdamW, lr=1e-3))
    trainer.validate(module, datamodule=data_module(groups_dir, model.tokenizer), verbose=False)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def keep_dev_groups(groups_dir, indices) -> None:
    lines = (groups_dir / "dev.jsonl").read_text().splitlines(True)
    (groups_dir / "dev.jsonl").write_text("".join(lines[i] for i in indices))


def test_two_ranks_log_the_dev_metrics_of_one_process(tmp_path, caplog):
    task = ProceduralTask(sizes={"train": 4, "validation": 11, "test": 0})
    build_groups(ProceduralGroupSource(task, sizes={"train": 4, "dev": 11}), tmp_path)
    data = data_module(tmp_path, build_char_tokenizer())
    data.setup("validate")
    data.trainer = SimpleNamespace(world_size=2)
    with caplog.at_level(logging.WARNING, logger="planlift.distributed"):
        assert len(data.val_dataloader().dataset) == 10  # 11 over 2 ranks: the padding would count one twice
    assert "val/* counts 10 dev groups, not 11" in caplog.text

    two = validate(tmp_path, 2)
    keep_dev_groups(tmp_path, range(10))
    alone = validate(tmp_path, 1)
    assert alone.keys() == two.keys() and {"val/pairwise_acc", "val/total_mae", "val/loss"} <= alone.keys()
    for name, value in alone.items():
        # float32 sums split over two ranks round differently: a loss of 19 differs in its 7th digit (an Intel
        # Xeon with AMX: 19.1048870 vs 19.1048851)
        assert two[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
    keep_dev_groups(tmp_path, range(0, 10, 2))  # rank 0's share: what it logged before the gather
    rank_zero = validate(tmp_path, 1)
    assert any(rank_zero[name] != pytest.approx(value, abs=1e-6) for name, value in alone.items())
