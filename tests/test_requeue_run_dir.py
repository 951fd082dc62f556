"""Whether a requeued SLURM job comes back to its run's directory (planlift.callbacks.requeue.run_dir_is_kept):
a single run whose hydra.run.dir names the start time (Hydra's default) would start over in a new one, so the
requeue signal saves without requeueing. The real jobs are the slurm tier's
(`test_a_plain_sbatch_run_requeues_only_into_its_own_directory`)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from planlift.callbacks import requeue
from planlift.callbacks.requeue import RequeueSignal, run_dir_is_kept

ROOT = Path(__file__).resolve().parents[1]


def hydra_node(mode: RunMode, run_dir: str):
    return OmegaConf.create({"mode": mode, "run": {"dir": run_dir}})


@pytest.mark.parametrize(
    ("mode", "run_dir", "kept"),
    [
        (RunMode.RUN, "${paths.log_dir}/runs/${now:%Y-%m-%d_%H-%M-%S}", False),  # conf/hydra/default.yaml
        (RunMode.RUN, "/scratch/me/run-7", True),  # pinned on the command line
        (RunMode.RUN, "${paths.log_dir}/runs/${oc.env:SLURM_JOB_ID}", True),
        (RunMode.MULTIRUN, "${paths.log_dir}/runs/${now:%Y-%m-%d_%H-%M-%S}", True),  # a submitit job
    ],
)
def test_a_run_dir_naming_the_start_time_is_not_kept(mode, run_dir, kept):
    assert run_dir_is_kept(hydra_node(mode, run_dir))[0] is kept


def test_the_default_run_dir_is_the_one_that_is_not_kept():
    default = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "hydra" / "default.yaml"), resolve=False)
    assert not run_dir_is_kept(hydra_node(RunMode.RUN, default["run"]["dir"]))[0]


def test_a_signal_in_a_run_that_would_start_over_saves_without_requeueing(monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    unstable = (False, "its output dir is hydra.run.dir=runs/${now:%H}, which names the start time")
    monkeypatch.setattr(requeue, "run_dir_is_kept", lambda: unstable)
    calls = []
    monkeypatch.setattr(requeue.subprocess, "run", lambda *a, **k: calls.append(a))
    handler = RequeueSignal(signum=10)
    handler.received = True
    with caplog.at_level(logging.WARNING, logger="planlift.callbacks.requeue"):
        handler.requeue(SimpleNamespace(is_global_zero=True, global_step=7))
    assert calls == [] and not handler.received  # no scontrol requeue
    assert "not requeueing SLURM job 41 at step 7" in caplog.text and "names the start time" in caplog.text


def test_the_requeue_is_logged_before_scontrol_is_asked(monkeypatch, caplog):
    """SLURM may stop the job as soon as `scontrol requeue` is accepted, before a line logged after the call
    is written (a slurm-tier CI run lost it): the line comes first."""
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setattr(requeue, "run_dir_is_kept", lambda: (True, ""))
    logged_at_call = []

    def scontrol(argv, **kwargs):
        logged_at_call.append((argv, "asking SLURM to requeue job 42 at step 9" in caplog.text))
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(requeue.subprocess, "run", scontrol)
    with caplog.at_level(logging.INFO, logger="planlift.callbacks.requeue"):
        RequeueSignal(signum=10).requeue(SimpleNamespace(is_global_zero=True, global_step=9))
    assert logged_at_call == [(["scontrol", "requeue", "42"], True)]
