"""`python src/train.py` end to end in subprocesses, with the debug preset and a shared bootstrap cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def sweep_command(name: str, sweep_dir: Path, *overrides: str) -> list[str]:
    """`python src/train.py -m` over sweeps/<name>.yaml with the debug preset, into `sweep_dir`."""
    return [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-m",
        "-cd",
        str(ROOT / "sweeps"),
        "-cn",
        name,
        "debug=fast",
        "torch_threads=1",
        "callbacks.rich_progress_bar=null",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]


def train(run_dir: Path, cache_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python src/train.py debug=fast` with the tiny models, their bootstrap cached in `cache_dir`."""
    result = train_preset(
        run_dir, "debug=fast", *overrides, timeout=900, env={"PLANLIFT_CACHE": str(cache_dir)}
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def train_preset(
    run_dir: Path, *overrides: str, timeout: int = 1800, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python src/train.py <overrides>` single-threaded, offline, without a progress bar, into `run_dir`."""
    return subprocess.run(
        train_command(run_dir, *overrides),
        cwd=ROOT,
        env=train_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_command(run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "torch_threads=1",
        f"hydra.run.dir={run_dir}",
        "callbacks.rich_progress_bar=null",
        *overrides,
    ]


# what an in-process distributed test leaves in this process's environment (Lightning sets them): a run
# started from here must not inherit that rendezvous
DISTRIBUTED_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")


def train_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(extra or {})}


def scalars(run_dir: Path):
    from tbparse import SummaryReader

    frame = SummaryReader(str(run_dir / "tensorboard")).scalars
    return {tag: list(zip(group.step, group.value, strict=True)) for tag, group in frame.groupby("tag")}


def text_steps(run_dir: Path) -> dict[str, list[int]]:
    from tbparse import SummaryReader

    frame = SummaryReader(str(run_dir / "tensorboard")).text
    return {tag: sorted(group.step) for tag, group in frame.groupby("tag")}


def hparams_entries(run_dir: Path) -> int:
    """How many HParams entries (config + final metrics, TensorBoard's HParams tab) the run's events hold."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(
        value.metadata.plugin_data.plugin_name == "hparams" and value.tag == "_hparams_/session_start_info"
        for path in (run_dir / "tensorboard").rglob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
    )


# The reward terms each mode logs (train/reward/<term>); every other term must be absent.
MODE_TERMS = {
    "exec_only": {"e2e", "leakage", "final"},
    "grounded": {"e2e", "w", "b", "uplift", "rm", "leakage", "final"},
    "grounded_guarded": {"e2e", "w", "b", "uplift", "rm", "leakage", "final"},
}
ALL_TERMS = {"e2e", "w", "b", "uplift", "rm", "leakage", "exec", "coeff", "final"}


@pytest.mark.parametrize("reward", ["exec_only", "grounded", "grounded_guarded"])
def test_debug_run_trains_logs_checkpoints_and_exports(tmp_path, cache_dir, reward):
    run_dir = tmp_path / "run"
    result = train(run_dir, cache_dir, f"reward={reward}")
    logged = scalars(run_dir)
    for tag in (
        "train/reward/final",
        "train/reward/e2e",
        "train/reward_std",
        "train/frac_reward_zero_std",
        "train/reward/masked",
        "train/loss",
        "train/kl",
        "train/clip_fraction",
        "train/entropy",
        "train/time/rollout",
        "train/time/executor",
        "train/time/update",
        "val/e2e_acc",
        "val/baseline_acc",
        "val/uplift",
        "val/leakage",
        "val/trace/step_acc",
        "val/trace/exact_exec",
        "val/pass@4",
        "val/sampled/e2e_acc",
        "val/trace/kind/faithful",
        "val/sampled/trace/kind/leaked",
        "train/trace/kind/faithful",
        "train/trace/step_acc",
        "train/trace/right_wrong_reasons",
        "final/val/e2e_acc",
    ):
        assert tag in logged, tag
    # every validation metric and the bootstrap's numbers reach disk as final/* (the HParams view), and the
    # HParams entry itself: written after fit, they are the last thing the process writes before it exits
    finals = {tag for tag in logged if tag.startswith("final/")}
    validation = {f"final/{tag}" for tag in logged if tag.startswith("val/")}
    bootstrap = {f"final/bootstrap/{k}" for k in ("executor_alone", "executor_gold", "planner_executor")}
    assert finals == validation | bootstrap, sorted(finals ^ (validation | bootstrap))
    assert hparams_entries(run_dir) == 1
    terms = {tag.split("/")[2] for tag in logged if tag.startswith("train/reward/") and tag.count("/") == 2}
    assert terms & ALL_TERMS == MODE_TERMS[reward]
    if reward == "exec_only":  # the reward is the e2e sample, step by step
        assert logged["train/reward/final"] == logged["train/reward/e2e"]
    else:
        assert all(-0.5 <= value <= 1.0 for _, value in logged["train/reward/final"])
        low = 0.0 if reward == "grounded_guarded" else -1.0  # the default floors uplift at 0
        assert all(low <= value <= 1.0 for _, value in logged["train/reward/uplift"])
    kind_tags = [tag for tag in logged if tag.startswith("train/trace/kind/")]
    for step in range(4):  # every sampled trace has exactly one kind
        assert sum(dict(logged[tag])[step] for tag in kind_tags) == pytest.approx(1.0)
    # debug=fast logs samples every step (log_samples_every: 1)
    assert text_steps(run_dir)["train/samples"] == [0, 1, 2, 3]
    assert "run summary" in result.stdout and "val/e2e_acc" in result.stdout
    assert [step for step, _ in logged["train/loss"]] == [0, 1, 2, 3]
    assert logged["val/e2e_acc"][0][0] == 0  # validation before training
    assert all(torch.isfinite(torch.tensor([v for _, v in logged["train/loss"]])))
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    exported = run_dir / "planner_hf"
    assert (exported / "config.json").is_file() and (exported / "tokenizer.json").is_file()
    from planlift.models import load_policy

    assert load_policy(str(exported)).model.config.model_type == "qwen2"


def test_final_metrics_and_hparams_are_on_disk_when_train_returns(tmp_path, cache_dir, monkeypatch):
    """fit closes the loggers' writer; the final/* metrics and the HParams entry logged after it go to a new
    one, whose events a daemon thread writes from a queue. The run must close that writer (which drains the
    queue): left open, a process that exits at once loses what is still queued (seen in 1 of 2 default runs
    and in the last job of a 15-run sweep: no HParams entry, 5-6 final metrics missing). Here the writer
    thread is slowed once fit is over, so what is still queued when `train` returns is missing on disk."""
    import time

    from tensorboard.summary.writer.record_writer import RecordWriter

    from tests.test_configs import compose_with, load_entry_point

    entry = load_entry_point()
    real_final_metrics, real_write = entry.final_metrics, RecordWriter.write

    def slow_write(self, data):
        time.sleep(0.05)
        real_write(self, data)

    def final_metrics(*args, **kwargs):  # called after fit, just before the loggers get the final metrics
        monkeypatch.setattr(RecordWriter, "write", slow_write)
        return real_final_metrics(*args, **kwargs)

    monkeypatch.setattr(entry, "final_metrics", final_metrics)
    run_dir = tmp_path / "run"
    overrides = [
        "debug=fast",
        "torch_threads=1",
        "callbacks.rich_progress_bar=null",
        f"paths.cache_dir={cache_dir}",
    ]
    entry.train(compose_with(overrides, run_dir))
    logged = scalars(run_dir)  # read at once, as if the process had exited
    assert hparams_entries(run_dir) == 1
    validation = {f"final/{tag}" for tag in logged if tag.startswith("val/")}
    assert len(validation) > 30 and validation <= set(logged), sorted(validation - set(logged))


def test_resume_continues_the_step_count(tmp_path, cache_dir):
    first = tmp_path / "first"
    train(first, cache_dir)
    resumed = tmp_path / "resumed"
    train(resumed, cache_dir, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=6")
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    steps = [step for step, _ in scalars(resumed)["train/loss"]]
    assert steps == [4, 5]


def test_same_seed_gives_the_same_metrics(tmp_path, cache_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    train(a, cache_dir, "seed=3")
    train(b, cache_dir, "seed=3")
    logged_a, logged_b = scalars(a), scalars(b)
    for tag in (
        "train/reward/final",
        "train/loss",
        "train/completion_length",
        "val/e2e_acc",
        "val/trace/step_acc",
    ):
        assert logged_a[tag] == logged_b[tag], tag


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["reward=uplift_only"],
        ["reward=rm_only", "rm=constant"],
        ["algorithm.kl_coef=0.05", "algorithm.loss_aggregation=dr_grpo", "algorithm.scale_rewards=false"],
        [
            "algorithm.num_iterations=2",
            "algorithm.micro_batch_size=3",
            "algorithm.loss_aggregation=sequence_mean",
        ],
    ],
    ids=lambda overrides: ",".join(overrides),
)
def test_other_cpu_options_train(tmp_path, cache_dir, overrides):
    run_dir = tmp_path / "run"
    train(run_dir, cache_dir, *overrides, "trainer.max_steps=2")
    logged = scalars(run_dir)
    # max_steps counts optimizer steps: two per rollout batch when num_iterations=2
    expected = [0] if "algorithm.num_iterations=2" in overrides else [0, 1]
    assert [step for step, _ in logged["train/loss"]] == expected
    assert all(torch.isfinite(torch.tensor([v for _, v in logged["train/loss"]])))
    if "algorithm.kl_coef=0.05" in overrides:
        assert all(v >= 0 for _, v in logged["train/kl"])


@pytest.mark.slow
def test_lora_planner_checkpoints_the_adapter_resumes_and_exports_merged(tmp_path, cache_dir):
    lora = "model.lora={r:4,alpha:8,dropout:0.0}"
    first = tmp_path / "first"
    train(first, cache_dir, lora, "algorithm.kl_coef=0.05", "trainer.max_steps=2")
    checkpoint = torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["state_dict"] and all("lora_" in key for key in checkpoint["state_dict"])
    resumed = tmp_path / "resumed"
    train(
        resumed, cache_dir, lora, "algorithm.kl_coef=0.05", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"
    )
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    from planlift.models import load_policy

    exported = load_policy(str(resumed / "planner_hf")).model
    assert not any("lora" in name for name, _ in exported.named_parameters())


@pytest.mark.slow
def test_the_best_checkpoints_planner_is_exported_on_request(tmp_path, cache_dir):
    """callbacks.export_planner.weights=best: planner_hf holds the weights of model_checkpoint's best file."""
    import json

    from planlift.models import load_policy

    run_dir = tmp_path / "run"
    train(run_dir, cache_dir, "callbacks.export_planner.weights=best")
    provenance = json.loads((run_dir / "planner_hf" / "planlift_export.json").read_text())
    best = torch.load(provenance["checkpoint"], weights_only=False)
    assert Path(provenance["checkpoint"]).name == f"best-step{best['global_step']:06d}.ckpt"
    assert provenance["weights"] == "best" and provenance["step"] == best["global_step"]
    assert provenance["score"] == pytest.approx(max(v for s, v in scalars(run_dir)["val/e2e_acc"] if s > 0))
    exported = load_policy(str(run_dir / "planner_hf")).model.state_dict()
    for key, value in best["state_dict"].items():
        assert torch.equal(exported[key.removeprefix("planner.")], value), key


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ("model=qwen2_5_7b", "Qwen/Qwen2.5-7B"),
        ("model=qwen2_5_0_5b", "Qwen/Qwen2.5-0.5B"),
        ("executor=qwen", "Qwen/Qwen2.5-7B-Instruct"),
    ],
)
def test_offline_hub_model_fails_with_a_clear_error(tmp_path, cache_dir, override, name):
    result = train(tmp_path / "run", cache_dir, override, check=False)
    assert result.returncode == 2
    assert "weights not found offline" in result.stderr and f"{name}'" in result.stderr
    assert "Traceback" not in result.stderr


def fails_before_the_bootstrap(tmp_path: Path, override: str) -> str:
    """Run with an empty cache: a reward setting must fail before the bootstrap trains (minutes on CPU) or
    any model loads. Returns stderr."""
    fresh = tmp_path / "fresh_cache"
    env = {"PLANLIFT_CACHE": str(fresh), "PLANLIFT_BOOTSTRAP_CACHE": str(fresh / "bootstrap")}
    result = train_preset(tmp_path / "run", "debug=fast", override, timeout=300, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (fresh / "bootstrap").exists(), (
        "the bootstrap started before the reward's settings were checked"
    )
    return result.stderr


def test_invalid_reward_value_fails_with_the_key_before_any_work(tmp_path):
    assert "reward.repeats must be >= 1, got -1" in fails_before_the_bootstrap(tmp_path, "reward.repeats=-1")


def test_code_reward_on_a_math_task_fails_with_the_key(tmp_path):
    """code_gated scores program statuses: on the procedural task every sample lost its execution bonus."""
    stderr = fails_before_the_bootstrap(tmp_path, "reward=code_gated")
    assert "reward.mode=code_gated scores programs" in stderr and "'procedural'" in stderr


DDP_SIM = ("hardware=ddp_sim", "algorithm.micro_batch_size=2", "data.train_limit=4")  # repeats from step 3


@pytest.mark.slow
def test_ddp_sim_two_processes(tmp_path, cache_dir):
    """Two gloo ranks train and checkpoint each rank's state; killed after its step-2 checkpoint and resumed,
    the run is the uninterrupted one: same rewards and losses, same weights, and rank 1 (whose state only
    rank 0 writes) sampled the same baselines as many times."""
    run_dir = tmp_path / "runs" / "ddp"
    train(run_dir, cache_dir, *DDP_SIM)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]  # one Hydra output dir
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    writers = {event.name.split(".")[-2] for event in events}  # events.out.tfevents.<time>.<host>.<pid>.<n>
    assert events and len(writers) == 1  # rank-0 logging only
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 wrote into the same Hydra dir
    logged = scalars(run_dir)
    assert [step for step, _ in logged["train/loss"]] == [0, 1, 2, 3]
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 4
    ranks = final["planlift"]["ranks"]
    assert len(ranks) == 2 and all(state["baseline_cache"]["entries"] for state in ranks)

    interrupted = tmp_path / "interrupted"
    checkpoint = interrupted / "checkpoints" / "last.ckpt"
    env = train_env({"PLANLIFT_CACHE": str(cache_dir)})
    process = subprocess.Popen(
        train_command(interrupted, "debug=fast", *DDP_SIM, "auto_resume=false"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # rank 1 is rank 0's child: the group dies together
    )
    deadline = time.monotonic() + 600
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 2
    train(interrupted, cache_dir, *DDP_SIM)  # auto_resume from last.ckpt

    def last_per_step(series):
        return sorted(dict(series).items())

    resumed = scalars(interrupted)
    for tag in ("train/reward/final", "train/loss", "train/executor/calls", "val/e2e_acc"):
        assert last_per_step(resumed[tag]) == last_per_step(logged[tag]), tag
    again = torch.load(checkpoint, weights_only=False)
    for name, tensor in final["state_dict"].items():
        assert torch.equal(tensor, again["state_dict"][name]), name
    for before, after in zip(ranks, again["planlift"]["ranks"], strict=True):
        counts = [
            {k: v for k, v in state["executor"]["stats"].items() if k != "seconds"}
            for state in (before, after)
        ]
        assert counts[0] == counts[1]
        assert before["baseline_cache"]["entries"].keys() == after["baseline_cache"]["entries"].keys()
