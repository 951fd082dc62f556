"""Every rank of a distributed fit resumes from the same checkpoint: each rank chooses its own before the
process group exists (`runtime.checkpoint_to_resume`), and a rank that chose otherwise stops the fit with a
ConfigError naming each rank's choice, before any checkpoint is restored. Two gloo ranks (ddp_spawn)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from planlift.callbacks import SameResumeCheckpoint

pytestmark = pytest.mark.slow


class RankChoice(SameResumeCheckpoint):
    """Stands for the choice each rank's process makes: rank r holds `choices[r]`."""

    def __init__(self, choices: list[str | None]) -> None:
        super().__init__(None)
        self.choices = choices

    def setup(self, trainer, pl_module, stage):
        self.ckpt_path = self.choices[trainer.global_rank]
        super().setup(trainer, pl_module, stage)


def _fit(tmp_path, choices: list[str | None]) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[RankChoice(choices)],
    )
    trainer.fit(BoringModel())


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_ranks_that_chose_different_checkpoints_stop_naming_each_choice(tmp_path):
    newer, older = str(tmp_path / "last.ckpt"), str(tmp_path / "hpc_ckpt_1.ckpt")
    with pytest.raises(Exception, match="the ranks disagree on the checkpoint to resume from") as raised:
        _fit(tmp_path, [newer, older])
    assert f"rank 0: '{newer}'" in str(raised.value) and f"rank 1: '{older}'" in str(raised.value)
    with pytest.raises(Exception, match="rank 1: None"):  # a rank that found none would start afresh
        _fit(tmp_path, [newer, None])


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_ranks_that_agree_fit(tmp_path):
    _fit(tmp_path, [None, None])  # a fresh run on both ranks trains its step
