"""SLURM's requeue signal (the launcher's `--signal=USR1@120`: two minutes before the time limit), taken
at a step boundary.

Lightning's own handler saves a checkpoint and requeues the job inside the signal handler, at whatever
point the process has reached. That point can be inside another checkpoint save: the nested save then
closes the filesystem transaction the outer save is writing in, and the outer one fails
(`AttributeError: 'NoneType' object has no attribute '_intrans'`, fsspec), which ends the job. Under several
ranks the save is collective and each rank gets the signal at its own point, so the save can meet another
rank's gradient all-reduce.

Here the handler only records the signal. `src/train.py` installs it when the job starts, so that a
signal during model loading or the bootstrap is kept too (with no handler, SIGUSR1 ends the process;
Lightning's is there only while a Trainer runs). Lightning, finding a handler in place, adds none of its
own for the signal (its SIGTERM handling stays). `planlift.callbacks.LastCheckpoint` asks `due` at the end
of every training step: the ranks agree on it there (one all-reduce of a flag, under several ranks only),
save `last.ckpt` with the guarantees of a scheduled save (after a due validation, metrics flushed,
atomic), and rank 0 asks SLURM to requeue the job, which resumes from `last.ckpt` (`auto_resume`). A
signal after the last step is left: the job finishes.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


class RequeueSignal:
    """The process's record of the requeue signal; `install` sets it up once."""

    _installed: RequeueSignal | None = None

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.received = False
        self._previous = None

    @classmethod
    def install(cls) -> RequeueSignal | None:
        """The handler, installed on first call under SLURM (a task of a batch job: not an interactive
        `srun bash`); None elsewhere or off the main thread, where Python cannot set signal handlers."""
        if cls._installed is None and _slurm_task() and threading.current_thread() is threading.main_thread():
            handler = cls(SLURMEnvironment().requeue_signal)
            handler._previous = signal.signal(handler.signum, handler._on_signal)
            cls._installed = handler
        return cls._installed

    @classmethod
    def install_for(cls, cfg) -> RequeueSignal | None:
        """At job start (an entry point's first step): install the handler when the run saves `last.ckpt`
        (`cfg.callbacks.last_checkpoint`); without it Lightning's own handler stays."""
        if (cfg.get("callbacks") or {}).get("last_checkpoint"):
            handler = cls.install()
            kept, why = run_dir_is_kept() if handler is not None else (True, "")
            if not kept:
                log.warning(
                    "SLURM job %s: %s; a requeue would start a new run, so the requeue signal will save "
                    "last.ckpt without requeueing (pin hydra.run.dir, or submit through hydra/launcher=slurm)",
                    os.environ.get("SLURM_JOB_ID"),
                    why,
                )
            return handler
        return None

    @classmethod
    def for_trainer(cls, trainer: pl.Trainer) -> RequeueSignal | None:
        """The handler when this trainer runs under SLURM with Lightning's `auto_requeue` on (its default)."""
        environment = trainer._accelerator_connector.cluster_environment  # what Lightning's handlers go by
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            return cls.install()
        return None

    @classmethod
    def uninstall(cls) -> None:
        handler, cls._installed = cls._installed, None
        if handler is not None and signal.getsignal(handler.signum) == handler._on_signal:
            signal.signal(
                handler.signum, handler._previous if handler._previous is not None else signal.SIG_DFL
            )

    def _on_signal(self, signum: int, frame) -> None:
        self.received = True  # nothing else: the process may be anywhere, a checkpoint write included

    def due(self, trainer: pl.Trainer) -> bool:
        """Has any rank received the signal? Collective under several ranks: every rank calls it at the same
        step."""
        return trainer.strategy.reduce_boolean_decision(self.received, all=False)

    def requeue(self, trainer: pl.Trainer) -> None:
        """Rank 0 asks SLURM to requeue the job; SLURM then stops it, and the requeued job resumes. Not when
        the requeued job would start a new run (`run_dir_is_kept`): training goes on until SLURM stops it,
        and the warning says how to resume."""
        self.received = False
        if not trainer.is_global_zero:
            return
        job = slurm_job_id()
        kept, why = run_dir_is_kept()
        if not kept:
            log.warning(
                "not requeueing SLURM job %s at step %d: %s, so the requeued job would train again from step 0. "
                "The checkpoint is saved: resume with ckpt_path=<it>, or submit with hydra.run.dir pinned "
                "(or through hydra/launcher=slurm) so that a requeued job continues",
                job,
                trainer.global_step,
                why,
            )
            return
        # logged before the call: SLURM may stop this process as soon as the requeue is accepted, before a
        # line written after it reaches the job's output
        log.info("asking SLURM to requeue job %s at step %d", job, trainer.global_step)
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode != 0:
            log.warning(
                "requeueing SLURM job %s failed (scontrol rc=%d: %s); training goes on until the job is stopped",
                job,
                result.returncode,
                (result.stderr or result.stdout).strip(),
            )


def run_dir_is_kept(hydra_cfg=None) -> tuple[bool, str]:
    """(whether a requeued job of this run writes to the same output dir, why not). A job of a submitit
    sweep (`hydra/launcher=slurm`) is re-run with its own config; a single run's dir is kept unless it holds
    the start time (`${now:...}`, Hydra's default `runs/<date>_<time>`), which a requeued job reads anew."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if hydra_cfg is None:
        if not HydraConfig.initialized():
            return True, ""  # not a Hydra run: the caller chose its directory
        hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return True, ""
    run_dir = str(OmegaConf.to_container(hydra_cfg.run, resolve=False)["dir"])
    if "${now:" in run_dir:
        return False, f"its output dir is hydra.run.dir={run_dir}, which names the start time"
    return True, ""


def _slurm_task() -> bool:
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def slurm_job_id() -> str:
    """`<array job>_<task>` for an array job (a sweep), else the job id."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    if not re.fullmatch(r"[0-9_]+", job):
        raise ValueError(f"unexpected SLURM job id {job!r}")
    return job
