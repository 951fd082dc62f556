"""`last.ckpt` for resuming: the latest training state, saved on a step schedule and when training ends,
atomically.

(Lightning's ModelCheckpoint refreshes `last.ckpt` only when a monitored top-k checkpoint is saved,
so a run whose final validation did not improve would resume from an older step.)

A save writes `last.ckpt.tmp` in the same directory, syncs it to disk and renames it over `last.ckpt`
(`os.replace`: atomic on POSIX filesystems), so a process killed during a save leaves the previous
`last.ckpt` whole, never a truncated one.

A save that falls on a step whose validation is due waits until that validation has ended: saved
before it, a resumed run would count the validation as done and never run it (Lightning fast-forwards
past it); saved after it, the checkpoint holds the validation too, and a kill during the validation
resumes from the previous checkpoint and runs it again.

The logged metrics of every step a checkpoint covers are on disk before it becomes `last.ckpt`: the loggers
are flushed first. Lightning hands a step's metrics to the loggers only after `on_train_batch_end`, so a
save there is written then and committed when the next batch starts (or training ends); a run killed in
between resumes from the previous checkpoint and logs those steps again, rather than never logging the
step before the checkpoint.

Its saves come after every other callback's hooks of the same step, so that last.ckpt holds their state after
that step's validation: ModelCheckpoint's best tracker updated, its previous best file deleted (saved before the
update, last.ckpt named a best file that no longer exists, and a resumed run kept two with save_top_k=1).
Lightning runs Checkpoint callbacks after all others; `setup` puts this one after the other Checkpoints
(ModelCheckpoint), whatever order the config lists them in. Being a Checkpoint, it needs Lightning's
`enable_checkpointing` (the default) and stands in for the ModelCheckpoint Lightning would add when none is given.

Under SLURM, the requeue signal (planlift.callbacks.requeue) makes the end of the step it arrives in a save
point like the schedule's; once that `last.ckpt` is committed, the job is requeued.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from planlift.atomic import commit, remove, staging_path
from planlift.callbacks.requeue import RequeueSignal
from planlift.distributed import same_on_every_rank

log = logging.getLogger(__name__)


class LastCheckpoint(Checkpoint):
    def __init__(self, dirpath: str, every_n_steps: int = 50, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.every_n_steps = every_n_steps
        self._saved_step = -1
        self._after_validation = False
        self._staged = False  # written to its staging path, not yet committed
        self._requeue: RequeueSignal | None = None
        self._requeue_after_commit = False

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        _run_last(trainer)
        if stage == "fit":  # before Lightning registers its signal handlers
            self._requeue = RequeueSignal.for_trainer(trainer)

    def _save(self, trainer: pl.Trainer, *, commit_now: bool = True) -> None:
        if trainer.global_step == self._saved_step:
            return
        staging = staging_path(self.path)
        # a killed save's leftover goes first: the shards of another world size would stay in its directory
        if trainer.is_global_zero and (staging.exists() or staging.is_symlink()):
            remove(staging)
        trainer.strategy.barrier()
        trainer.save_checkpoint(staging, weights_only=False)  # collective: every rank
        self._saved_step, self._staged = trainer.global_step, True
        if commit_now:
            self._commit(trainer)

    def _commit(self, trainer: pl.Trainer) -> None:
        """The staged checkpoint becomes last.ckpt, once the metrics it covers are flushed to disk; then a
        requeue that waited for it."""
        if self._staged:
            for logger in trainer.loggers:
                logger.save()
            if trainer.is_global_zero:
                commit(staging_path(self.path), self.path)
            trainer.strategy.barrier()
            self._staged = False
        if self._requeue_after_commit:
            self._requeue_after_commit = False
            self._requeue.requeue(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._commit(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        scheduled = bool(self.every_n_steps) and trainer.global_step % self.every_n_steps == 0
        requeue = self._requeue is not None and self._requeue.due(trainer)  # every rank, every step
        if scheduled or requeue:
            self._requeue_after_commit |= requeue
            if _validation_due(trainer):
                self._after_validation = True
            else:  # this step's metrics reach the loggers after this hook: committed at the next batch
                self._save(trainer, commit_now=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            self._save(trainer)  # the step's and the validation's metrics are logged by now

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._requeue_after_commit:  # training is done: the job finishes rather than run again
            self._requeue_after_commit = False
            log.info("requeue signal at the last step: the job finishes instead of being requeued")
        self._commit(trainer)
        self._save(trainer)


def _run_last(trainer: pl.Trainer) -> None:
    """Every LastCheckpoint moves behind the trainer's other callbacks (Lightning has put the Checkpoints last,
    in the order given), which keep their order."""
    callbacks = trainer.callbacks
    ordered = [c for c in callbacks if not isinstance(c, LastCheckpoint)]
    ordered += [c for c in callbacks if isinstance(c, LastCheckpoint)]
    if ordered != callbacks:
        trainer.callbacks = ordered  # a new list: Lightning is calling `setup` down the current one


def _validation_due(trainer: pl.Trainer) -> bool:
    """Will a validation run right after the training batch that has just ended (step-based schedule)?"""
    loop = trainer.fit_loop.epoch_loop
    if not trainer.enable_validation or trainer.check_val_every_n_epoch is not None:
        return False
    if trainer.val_check_batch == float("inf"):
        return False
    return (loop.total_batch_idx + 1) % int(trainer.val_check_batch) == 0  # as Lightning decides it


class SameResumeCheckpoint(pl.Callback):
    """Stops a distributed fit whose ranks would resume from different checkpoints. Each rank chooses its
    checkpoint before the process group exists (`runtime.checkpoint_to_resume`, which scans the run dir
    under `auto_resume`); a node whose view of a shared filesystem lags would resume from an older one or
    start afresh, and its loops, optimizer state and random streams would leave the other ranks' while DDP
    still averaged their gradients. The check runs at setup, once the group exists and before any
    checkpoint is restored: a ConfigError on every rank names each rank's choice."""

    def __init__(self, ckpt_path: str | None) -> None:
        self.ckpt_path = None if ckpt_path is None else str(Path(ckpt_path).resolve())

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            same_on_every_rank(self.ckpt_path, "the checkpoint to resume from")
