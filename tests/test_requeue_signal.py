"""SLURM's requeue signal is taken at a step boundary (planlift.callbacks.requeue): `last.ckpt` of that step
is committed, then the job is requeued, whatever the process was doing when the signal came.

Lightning's own handler saved inside the signal handler: a signal during another checkpoint write ended the
run (fsspec: `'NoneType' object has no attribute '_intrans'`). These tests run under SLURM's environment
variables with a recording `scontrol`; the slurm tier (tests/test_slurm_sweeps.py) preempts a real job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import fsspec.transaction
import pytest
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from planlift.callbacks import LastCheckpoint
from planlift.callbacks.requeue import RequeueSignal
from tests.executors.conftest import free_port
from tests.test_last_checkpoint import Counting

ROOT = Path(__file__).resolve().parents[1]
JOB_ID = "4242"


class Signalling(Counting):
    """tests/test_last_checkpoint.py's module, with SIGUSR1 sent to itself by one rank at one step."""

    def __init__(self, signal_rank: int | None = None, signal_step: int = -1) -> None:
        super().__init__()
        self.signal_rank, self.signal_step = signal_rank, signal_step

    def training_step(self, batch, batch_idx):
        if self.global_rank == self.signal_rank and self.global_step == self.signal_step:
            os.kill(os.getpid(), signal.SIGUSR1)  # this rank only, in the middle of a step
        return super().training_step(batch, batch_idx)


def slurm_environment(tmp_path: Path, tasks: int = 1) -> dict[str, str]:
    """SLURM's variables for one job of `tasks` tasks, and an `scontrol` that records its arguments and
    copies `last.ckpt` as it is when the requeue is asked for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(
        '#!/bin/sh\necho "$@" >> "$SCONTROL_CALLS"\ncp "$LAST_CKPT" "$LAST_CKPT.at_requeue"\n'
    )
    scontrol.chmod(0o755)
    return {
        "SLURM_JOB_ID": JOB_ID,
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": str(tasks),
        "SLURM_NTASKS_PER_NODE": str(tasks),
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "SCONTROL_CALLS": str(tmp_path / "scontrol_calls"),
        "LAST_CKPT": str(tmp_path / "checkpoints" / "last.ckpt"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=tmp_path,
        max_steps=9,
        val_check_interval=4,
        log_every_n_steps=1,
        logger=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def data() -> tuple[DataLoader, DataLoader]:
    return (
        DataLoader(torch.arange(32, dtype=torch.float32).unsqueeze(1), batch_size=1),
        DataLoader(torch.zeros(2, 1), batch_size=1),
    )


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=False)["global_step"]


@pytest.fixture
def slurm_job(tmp_path, monkeypatch):
    """This process as task 0 of a one-task SLURM job; the handler the run installs is removed afterwards."""
    before = signal.getsignal(signal.SIGUSR1)
    for name, value in {**slurm_environment(tmp_path), "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(name, value)
    # no Hydra job here: another test's Hydra config, left in this process, would name a run dir with the
    # start time, and the requeue would be refused (planlift.callbacks.requeue.run_dir_is_kept)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    yield tmp_path
    RequeueSignal.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_a_signal_during_a_checkpoint_write_is_taken_at_the_next_step(slurm_job, monkeypatch):
    # the signal arrives while the first checkpoint of the run (step 4, after its validation) is being written
    write, sent_at = fsspec.transaction.Transaction.start, []

    def write_then_signal(self):
        write(self)
        if not sent_at:
            sent_at.append(run.global_step)
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(fsspec.transaction.Transaction, "start", write_then_signal)
    last = LastCheckpoint(str(slurm_job / "checkpoints"), every_n_steps=4)
    best = ModelCheckpoint(dirpath=slurm_job / "checkpoints", monitor="val/step", mode="max")
    run = trainer(slurm_job, callbacks=[last, best])
    run.fit(Counting(), *data())

    assert sent_at == [4]
    assert (slurm_job / "scontrol_calls").read_text().splitlines() == [f"requeue {JOB_ID}"]
    # saved at the end of the next step (5), committed before the requeue; training went on (SLURM stops it)
    assert step_of(slurm_job / "checkpoints" / "last.ckpt.at_requeue") == 5
    assert step_of(slurm_job / "checkpoints" / "last.ckpt") == 9
    assert not list(slurm_job.glob("hpc_ckpt_*.ckpt"))  # Lightning's handler never ran


def test_a_signal_before_training_is_kept_for_the_first_step(slurm_job):
    """train.py installs the handler when the job starts: a signal while models load is not lost (with no
    handler, SIGUSR1 ends the process) and the first step ends with the save and the requeue."""
    RequeueSignal.install()
    os.kill(os.getpid(), signal.SIGUSR1)
    run = trainer(slurm_job, callbacks=[LastCheckpoint(str(slurm_job / "checkpoints"), every_n_steps=0)])
    run.fit(Counting(), *data())
    assert (slurm_job / "scontrol_calls").read_text().splitlines() == [f"requeue {JOB_ID}"]
    assert step_of(slurm_job / "checkpoints" / "last.ckpt.at_requeue") == 1


def test_a_signal_at_one_rank_saves_and_requeues_on_every_rank_at_one_step(tmp_path):
    """Rank 1 alone gets the signal, mid-step. A rank that saved on its own would enter the collective save
    while the other runs its step (a hang, or gloo's error); both save the end of step 3 and rank 0 requeues."""
    env = {
        **os.environ,
        **slurm_environment(tmp_path, tasks=2),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.test_requeue_signal", str(tmp_path)],
            cwd=ROOT,
            env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = []
    try:
        outputs = [rank.communicate(timeout=120)[0] for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
    assert [rank.returncode for rank in ranks] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert (tmp_path / "scontrol_calls").read_text().splitlines() == [f"requeue {JOB_ID}"]
    assert step_of(tmp_path / "checkpoints" / "last.ckpt.at_requeue") == 3
    assert step_of(tmp_path / "checkpoints" / "last.ckpt") == 9


if __name__ == "__main__":  # one rank of the two-rank test
    out = Path(sys.argv[1])
    run = trainer(
        out,
        strategy=pl.strategies.DDPStrategy(process_group_backend="gloo"),
        devices=2,
        callbacks=[LastCheckpoint(str(out / "checkpoints"), every_n_steps=0)],
    )
    run.fit(Signalling(signal_rank=1, signal_step=2), *data())
