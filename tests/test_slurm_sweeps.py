"""The `slurm` tier: sweeps through submitit on a real single-node SLURM with accounting.

Start it first (`make test-slurm` does): `bash scripts/slurm/start.sh` ... `bash scripts/slurm/stop.sh`.
Every job runs the debug preset on the tiny bootstrap (one shared cache for the session).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tbparse import SummaryReader

from tests.test_train_e2e import sweep_command as debug_sweep_command

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm
SLURM_DIR = Path(os.environ.get("PLANLIFT_SLURM_DIR", "/tmp/planlift-slurm"))


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory):
    conf = os.environ.get("SLURM_CONF") or str(SLURM_DIR / "slurm.conf")
    env = {
        **os.environ,
        "SLURM_CONF": conf,
        "PLANLIFT_CACHE": str(tmp_path_factory.mktemp("planlift_cache")),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    probe = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    if probe.returncode != 0 or ("idle" not in probe.stdout.split() and "mix" not in probe.stdout.split()):
        pytest.fail(f"no idle SLURM node ({probe.stdout}{probe.stderr}); run `bash scripts/slurm/start.sh`")
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], env=env, capture_output=True, text=True).stdout.split()
    if not cpus or int(cpus[0].rstrip("+")) < 2:
        pytest.fail(f"the SLURM node has {cpus} CPUs; the DDP job of the hardware sweep needs 2 tasks")
    return env


def sweep_command(name: str, sweep_dir: Path, *overrides: str) -> list[str]:
    return debug_sweep_command(name, sweep_dir, "hydra/launcher=slurm", *overrides)


def run_sweep(env, name: str, sweep_dir: Path, *overrides: str, timeout: float = 420):
    return subprocess.run(
        sweep_command(name, sweep_dir, *overrides),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_states(env, sweep_dir: Path) -> dict[str, list[str]]:
    """sacct states of the sweep's jobs (every attempt, -D), keyed by array job id `<id>_<task>`."""
    arrays = sorted(
        {p.name.split("_")[0] for p in (sweep_dir / ".submitit").iterdir() if p.name[0].isdigit()}
    )
    states: dict[str, list[str]] = {}
    for array in arrays:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-D", "-P", "-j", array, "--format=JobID,State"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            job_id, state = line.split("|")
            states.setdefault(job_id, []).append(state.split()[0])
    return states


def wait_until_done(env, sweep_dir: Path, count: int, timeout: float = 300) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = job_states(env, sweep_dir)
        finals = [s[-1] for s in states.values()]
        if len(finals) >= count and not {"PENDING", "RUNNING", "REQUEUED", "COMPLETING"} & set(finals):
            return states
        time.sleep(1)
    raise AssertionError(f"jobs still running after {timeout}s: {job_states(env, sweep_dir)}")


def sweep_job_ids(sweep_dir: Path) -> set[str]:
    """The SLURM job ids (`<array>_<task>`) submitit created for this sweep (its .submitit folders)."""
    folder = sweep_dir / ".submitit"
    return {p.name for p in folder.iterdir() if p.name[0].isdigit()} if folder.is_dir() else set()


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit()),
        key=lambda p: int(p.name.split("_")[0]),
    )


def final_step(job_dir: Path) -> int:
    return torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]


def check_completed(result, sweep_dir: Path, jobs: int) -> None:
    assert result.returncode == 0, result.stderr[-4000:]
    dirs = job_dirs(sweep_dir)
    assert len(dirs) == jobs
    assert all(final_step(d) == 4 for d in dirs)
    runs = sorted(p.name for p in (sweep_dir / "tensorboard").iterdir())
    assert runs == sorted(d.name.split("_", 1)[1] for d in dirs)  # one event tree, runs named by overrides
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*_log.err"))
    assert "SLURM auto-requeueing enabled" in logs  # Lightning runs under SLURMEnvironment


def test_reward_ablation_sweep(slurm_env, tmp_path):
    # every arm but grounded_learned, which needs the tiny RM of `make rm-tiny`
    arms = "arm=exec_only,grounded_oracle,uplift_only"
    result = run_sweep(slurm_env, "reward_ablation", tmp_path / "sweep", "seed=0", arms)
    check_completed(result, tmp_path / "sweep", 3)
    # submitit returns once the results are pickled; sacct may still say RUNNING for a moment.
    states = wait_until_done(slurm_env, tmp_path / "sweep", 3)
    assert len(states) == 3 and all(s == ["COMPLETED"] for s in states.values()), states


def test_executor_ablation_sweep(slurm_env, tmp_path):
    result = run_sweep(
        slurm_env,
        "executor_ablation",
        tmp_path / "sweep",
        "seed=0",
        "reward=grounded",
        "executor.temperature=0.0,1.0",
    )
    check_completed(result, tmp_path / "sweep", 2)


def test_length_collapse_sweep(slurm_env, tmp_path):
    result = run_sweep(
        slurm_env,
        "length_collapse",
        tmp_path / "sweep",
        "seed=0",
        "arm=grounded_oracle",
        "task.length=5,7",
        "trainer.max_steps=4",  # the sweep file sets the study's 50 steps, which win over debug=fast
    )
    check_completed(result, tmp_path / "sweep", 2)


def test_hardware_sweep_gives_ddp_jobs_one_task_per_device(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(slurm_env, "hardware", sweep)
    check_completed(result, sweep, 3)
    two_tasks = [p for p in (sweep / ".submitit").iterdir() if len(list(p.glob("*_result.pkl"))) == 2]
    assert len(two_tasks) == 2  # ddp_sim and fsdp_sim (ModelParallelStrategy: FSDP2 on a 2-rank gloo mesh)
    (array,) = {job.name.split("_")[0] for job in two_tasks}  # one array job for the jobs of 2 tasks
    assert "--ntasks-per-node=2" in (sweep / ".submitit" / array / f"{array}_submission.sh").read_text()
    for preset in ("ddp_sim", "fsdp_sim"):
        events = (sweep / "tensorboard" / f"hardware={preset},seed=0").glob("events.*")
        assert len({e.name.split(".")[-2] for e in events}) == 1, preset  # rank-0 logging only
    fsdp = next(d for d in job_dirs(sweep) if "fsdp_sim" in d.name)
    assert "sharded the planner" in (fsdp / "train.log").read_text()  # FSDP2, not an unsharded run


def test_crashing_job_fails_cleanly_without_sinking_the_others(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    start = time.monotonic()
    # problems_per_step=0 is a config error: that job exits 2 without a result
    result = run_sweep(
        slurm_env, "reward_ablation", sweep, "seed=0", "arm=exec_only", "data.problems_per_step=2,0,3"
    )
    assert result.returncode != 0 and time.monotonic() - start < 300
    assert "data.problems_per_step must be >= 1" in (
        result.stdout + result.stderr + "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    )
    finals = {job: s[-1] for job, s in wait_until_done(slurm_env, sweep, 3).items()}
    assert sorted(finals.values()) == ["COMPLETED", "COMPLETED", "FAILED"], finals
    steps = {d.name.split("_")[0]: final_step(d) for d in job_dirs(sweep) if (d / "checkpoints").is_dir()}
    assert steps == {"0": 4, "2": 4}


def test_sigkilled_job_fails_cleanly_without_hanging(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    driver = subprocess.Popen(
        sweep_command("reward_ablation", sweep, "arm=exec_only", "seed=0,1,2"),
        cwd=ROOT,
        env=slurm_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline:
        running = subprocess.run(
            ["squeue", "-h", "-t", "R", "-o", "%i"], env=slurm_env, capture_output=True, text=True
        ).stdout.split()
        victim = next((job for job in running if job.endswith("_1") and job in sweep_job_ids(sweep)), None)
        time.sleep(0.5)
    assert victim, "the second job never ran"
    subprocess.run(["scancel", "--signal=KILL", victim], env=slurm_env, check=True)
    try:
        output, _ = driver.communicate(timeout=240)  # accounting lets submitit see the death: no hang
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0, output[-3000:]
    finals = {job: s[-1] for job, s in wait_until_done(slurm_env, sweep, 3).items()}
    assert finals.pop(victim) in ("FAILED", "CANCELLED", "NODE_FAIL"), finals
    assert sorted(finals.values()) == ["COMPLETED", "COMPLETED"], finals


def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    driver = subprocess.Popen(
        sweep_command(
            "reward_ablation",
            sweep,
            "arm=exec_only",
            "seed=0",
            "trainer.max_steps=40",
            "trainer.val_check_interval=10",
        ),
        cwd=ROOT,
        env=slurm_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _, requeued_at = preempt_after_the_first_save(slurm_env, sweep, driver, "train", 40)
    assert requeued_at >= 10  # after the step-10 save
    # the requeued job went on from that step: each attempt's TensorBoard events, in the order written
    attempts = sorted((sweep / "tensorboard").rglob("events.*"), key=lambda p: p.stat().st_mtime)
    steps = [sorted(set(SummaryReader(str(p)).scalars.query("tag == 'train/loss'").step)) for p in attempts]
    steps = [s for s in steps if s]
    assert len(steps) == 2 and steps[1][0] == requeued_at, steps
    assert sorted({*steps[0], *steps[1]}) == list(range(40))  # one curve, no step missing


def preempt_after_the_first_save(slurm_env, sweep: Path, driver, job_name: str, max_steps: int):
    """Send the one job of `sweep` SLURM's pre-timeout signal right after its first last.ckpt, release its
    requeue, wait for the sweep's driver; check that the run saved at a step boundary, requeued itself,
    resumed and finished. Returns the job's directory and the step it requeued at."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(sweep.glob("0_*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    job = sorted(sweep_job_ids(sweep))
    assert len(job) == 1, job
    # what SLURM sends before a time limit (launcher: signal USR1@120), here right after the first save,
    # often during the best-checkpoint write that follows it: the run saves at its next step and requeues
    subprocess.run(["scancel", "--signal=USR1", job[0]], env=slurm_env, check=True)
    # SLURM holds a requeued job for ~2 minutes (BeginTime); as the cluster's admin, release it now
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job[0], "-o", "%T %r"], env=slurm_env, capture_output=True, text=True
        ).stdout.split()
        if state[:1] == ["PENDING"]:
            subprocess.run(
                ["scontrol", "update", f"JobId={job[0]}", "StartTime=now"], env=slurm_env, check=True
            )
            break
        time.sleep(0.2)
    try:
        output, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-4000:]
    (job_dir,) = job_dirs(sweep)
    assert final_step(job_dir) == max_steps
    states = wait_until_done(slurm_env, sweep, 1)[job[0]]
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    # the run saved last.ckpt at a step boundary and requeued itself; Lightning's handler (an hpc_ckpt
    # saved inside the signal handler) never ran
    log = (job_dir / f"{job_name}.log").read_text()  # both attempts
    requeued_at = [
        int(step) for step in re.findall(rf"asking SLURM to requeue job {job[0]} at step (\d+)", log)
    ]
    assert len(requeued_at) == 1 and 0 < requeued_at[0] < max_steps, log
    assert not list(job_dir.glob("hpc_ckpt_*.ckpt"))
    assert "resuming from" in log.split("asking SLURM to requeue job")[1]
    return job_dir, requeued_at[0]


def test_preempted_rm_training_is_requeued_and_resumes_from_its_checkpoint(slurm_env, tmp_path):
    """src/train_rm.py takes SLURM's pre-timeout signal as src/train.py does: it saves at the end of the
    step, requeues itself and the requeued job resumes from that checkpoint to the end."""
    from tests.rm.test_train_eval import tiny_groups, tiny_rm

    groups = tiny_groups(tmp_path / "groups")
    sweep = tmp_path / "sweep"
    argv = [
        sys.executable,
        str(ROOT / "src" / "train_rm.py"),
        "-m",
        "hydra/launcher=slurm",
        *tiny_rm(groups),
        "rm_backbone.tiny.num_hidden_layers=2",
        "trainer.max_steps=60",
        "trainer.val_check_interval=10",
        "torch_threads=1",
        f"hydra.sweep.dir={sweep}",
    ]
    driver = subprocess.Popen(
        argv, cwd=ROOT, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    job_dir, requeued_at = preempt_after_the_first_save(slurm_env, sweep, driver, "train_rm", 60)
    assert requeued_at >= 10
    assert (job_dir / "reward_model").is_dir()  # the finished run exported its RM


@pytest.mark.parametrize("pinned", [False, True], ids=["default_run_dir", "pinned_run_dir"])
def test_a_plain_sbatch_run_requeues_only_into_its_own_directory(slurm_env, tmp_path, pinned):
    """`sbatch --signal=USR1@... --wrap "srun python src/train.py ..."` without the submitit launcher: with
    Hydra's default run dir (it names the start time) a requeued job would train again from step 0 in a new
    dir, so the signal saves and the run finishes without requeueing; with hydra.run.dir pinned it requeues
    and resumes from last.ckpt."""
    logs = tmp_path / "logs"
    run_dir = tmp_path / "pinned"
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "debug=fast",
        "torch_threads=1",
        "callbacks.rich_progress_bar=null",
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        f"paths.log_dir={logs}",
        *([f"hydra.run.dir={run_dir}"] if pinned else []),
    ]
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--requeue",
            "--ntasks=1",
            "--open-mode=append",
            f"--output={tmp_path}/job-%j.out",
            "--wrap",
            f"srun {shlex.join(command)}",  # a job step, which SLURM's --signal and scancel --signal reach
        ],
        cwd=ROOT,
        env=slurm_env,
        capture_output=True,
        text=True,
        check=True,
    )
    job = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    checkpoints = lambda: list(tmp_path.glob("**/checkpoints/last.ckpt"))  # noqa: E731
    while time.monotonic() < deadline and not checkpoints():
        time.sleep(0.2)
    assert checkpoints(), (tmp_path / f"job-{job}.out").read_text()[-3000:]
    subprocess.run(["scancel", "--signal=USR1", job], env=slurm_env, check=True)
    released = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["sacct", "-n", "-X", "-D", "-P", "-j", job, "--format=State"],
            env=slurm_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if state and state[-1] == "PENDING" and "REQUEUED" in state and not released:
            # SLURM holds a requeued job for ~2 minutes (BeginTime); as the cluster's admin, release it
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm_env, check=True)
            released = True
        if state and state[-1] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
            break
        time.sleep(0.5)
    output = (tmp_path / f"job-{job}.out").read_text()
    assert state[-1] == "COMPLETED", (state, output[-3000:])
    runs = sorted({p.parents[1] for p in checkpoints()})
    assert len(runs) == 1, runs  # no second run dir
    assert torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 30
    if pinned:
        assert runs[0] == run_dir and "REQUEUED" in state
        assert re.search(rf"asking SLURM to requeue job {job} at step \d+", output)
        assert "resuming from" in output.split("asking SLURM to requeue job")[1]
    else:
        assert "REQUEUED" not in state, state
        assert f"not requeueing SLURM job {job}" in output and "names the start time" in output
