"""last.ckpt (planlift.callbacks.LastCheckpoint) saved at a validation holds ModelCheckpoint's tracker after that
validation's update, whatever order the callbacks are listed in: saved before it, last.ckpt named a best file
ModelCheckpoint had just deleted, and a resumed run kept two best files with save_top_k=1."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from planlift.callbacks import LastCheckpoint
from tests.test_last_checkpoint import Counting  # logs val/step = global step: a score that rises


def fit(root: Path, max_steps: int, last_first: bool, ckpt_path: str | None = None) -> None:
    """Validation every 2 steps, last.ckpt every 4 (after its validation), the best of val/step kept."""
    checkpoints = root / "checkpoints"
    last = LastCheckpoint(str(checkpoints), every_n_steps=4)
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best-step{step:06d}",
        monitor="val/step",
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        default_root_dir=root,
        max_steps=max_steps,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        logger=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[last, best] if last_first else [best, last],
    )
    data = DataLoader(torch.arange(32, dtype=torch.float32).unsqueeze(1), batch_size=1)
    trainer.fit(Counting(), data, DataLoader(torch.zeros(2, 1), batch_size=1), ckpt_path=ckpt_path)


@pytest.mark.parametrize("last_first", [True, False], ids=["last-listed-first", "best-listed-first"])
def test_last_ckpt_holds_the_best_tracker_after_its_validation(tmp_path, last_first):
    checkpoints = tmp_path / "checkpoints"
    fit(tmp_path, max_steps=4, last_first=last_first)
    saved = torch.load(checkpoints / "last.ckpt", weights_only=False)
    tracker = next(state for key, state in saved["callbacks"].items() if key.startswith("ModelCheckpoint"))
    assert saved["global_step"] == 4
    assert tracker["best_model_path"] == str(checkpoints / "best-step000004.ckpt")
    assert sorted(p.name for p in checkpoints.glob("best-*")) == ["best-step000004.ckpt"]

    fit(tmp_path, max_steps=8, last_first=last_first, ckpt_path=str(checkpoints / "last.ckpt"))
    # save_top_k=1 across the resume: the best of the uninterrupted run, and no other
    assert sorted(p.name for p in checkpoints.glob("best-*")) == ["best-step000008.ckpt"]
