"""last.ckpt (planlift.callbacks.LastCheckpoint) becomes the checkpoint of step g only once the metrics of
every step before g are on disk: a run killed right after it resumes at g and never logs those steps again."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from planlift.atomic import commit
from planlift.callbacks import LastCheckpoint


class Counting(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        self.log("train/step", float(self.global_step), on_step=True, on_epoch=False)
        return (self.weight - batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/step", float(self.global_step))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class OnDiskAtEachCommit:
    """planlift.atomic.commit as LastCheckpoint calls it, recording at each commit of last.ckpt the steps it
    covers that TensorBoard does not have on disk."""

    def __init__(self, log_dir) -> None:
        self.log_dir, self.commits = log_dir, []

    def __call__(self, staging, path) -> None:
        commit(staging, path)
        step = torch.load(path, weights_only=False)["global_step"]
        events = EventAccumulator(self.log_dir, size_guidance={"scalars": 0})
        events.Reload()
        logged = (
            {e.step for e in events.Scalars("train/step")}
            if "train/step" in events.Tags()["scalars"]
            else set()
        )
        self.commits.append((step, sorted(set(range(step)) - logged)))


def test_last_ckpt_is_committed_only_with_the_metrics_of_the_steps_it_covers(tmp_path, monkeypatch):
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    checkpoint = LastCheckpoint(str(tmp_path / "checkpoints"), every_n_steps=2)
    probe = OnDiskAtEachCommit(logger.log_dir)
    monkeypatch.setattr("planlift.callbacks.checkpoint.commit", probe)
    trainer = pl.Trainer(
        max_steps=9,
        val_check_interval=4,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[checkpoint],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    data = DataLoader(torch.arange(32, dtype=torch.float32).unsqueeze(1), batch_size=1)
    trainer.fit(Counting(), data, DataLoader(torch.zeros(2, 1), batch_size=1))
    # every 2 steps (those with a validation: after it) and at the end; no step missing from disk at any
    assert [step for step, _ in probe.commits] == [2, 4, 6, 8, 9]
    assert probe.commits == [(step, []) for step in (2, 4, 6, 8, 9)]
