"""Every sweep in sweeps/ composes: each of its jobs binds like a single run (tests/test_configs.py), and
the SLURM launcher gives each job one task per trainer device."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.test_configs import CONF, check_targets, compose_with

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
EXPECTED_JOBS = {
    "reward_ablation": 18,
    "executor_ablation": 18,
    "length_collapse": 36,
    "length_collapse_paper": 90,
    "hardware": 3,
}


def sweep_jobs(name: str) -> list[list[str]]:
    """The sweep's jobs as override lists, expanded the way Hydra's basic sweeper does."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        cfg = compose(name, overrides=[f"hydra.searchpath=[file://{CONF}]"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides(params)
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in batch]


def test_every_sweep_file_is_known():
    assert sorted(p.stem for p in SWEEPS.glob("*.yaml")) == sorted(EXPECTED_JOBS)


def covering(jobs: list[list[str]]) -> list[list[str]]:
    """Jobs such that every swept value appears in at least one (composing all 60 length jobs is slow)."""
    chosen, seen = [], set()
    for job in jobs:
        if not set(job) <= seen:
            chosen.append(job)
            seen |= set(job)
    return chosen


@pytest.mark.parametrize("name", sorted(EXPECTED_JOBS))
def test_sweep_jobs_compose_and_bind(name, tmp_path):
    jobs = sweep_jobs(name)
    assert len(jobs) == EXPECTED_JOBS[name]
    assert len({",".join(job) for job in jobs}) == len(jobs)  # every job is a distinct run
    for job in covering(jobs):
        cfg = compose_with([*job], tmp_path)
        assert check_targets(cfg) >= 10


def test_sweep_config_sets_its_own_directory(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        cfg = compose(
            "length_collapse", overrides=[f"hydra.searchpath=[file://{CONF}]"], return_hydra_config=True
        )
    assert "/multirun/length_collapse/" in cfg.hydra.sweep.dir
    assert cfg.task.length == 6 and cfg.reward.mode == "grounded"  # the base run is train.yaml's


@pytest.mark.parametrize("name", ["length_collapse", "length_collapse_paper"])
def test_length_sweeps_compose_with_budgets_that_grow_with_n(name, tmp_path):
    jobs = [job for job in sweep_jobs(name) if "seed=0" in job and "arm=exec_only" in job]
    lengths = set()
    for job in jobs:
        cfg = compose_with(job, tmp_path, SWEEPS, name)
        assert check_targets(cfg) >= 10
        assert cfg.reward.mode == "exec_only"  # the arm wins over the experiment's reward
        n = cfg.task.length
        lengths.add(n)
        if name == "length_collapse":  # the tiny models: ~9 characters per state, context to match
            assert cfg.algorithm.max_new_tokens == max(64, 11 * n) >= 10 * n
            assert cfg.bootstrap.architecture.max_position_embeddings == cfg.bootstrap.max_length
            assert cfg.bootstrap.max_length >= 22 * n  # prompt + reasoning: ~850 characters at N = 40
        else:  # the paper's scale: Qwen2.5-7B planner, vLLM executor, 8 GPUs per job, SLURM
            assert cfg.algorithm.max_new_tokens == max(512, 12 * n)
            assert cfg.task.ops == "+-*/" and cfg.task.modulus is None
            assert cfg.model.pretrained == "Qwen/Qwen2.5-7B" and cfg.model.lora.r == 16
            assert cfg.executor._target_ == "planlift.executors.VLLMExecutor"
            assert (cfg.trainer.devices, cfg.trainer.strategy) == (8, "ddp")
            assert cfg.hydra.launcher._target_.endswith("PlanliftSlurmLauncher")
    assert lengths == ({5, 10, 20, 40} if name == "length_collapse" else set(range(5, 96, 10)))
    guarded = compose_with(["task.length=5", "arm=grounded_guarded", "seed=1"], tmp_path, SWEEPS, name)
    assert (guarded.reward.leakage_policy, list(guarded.reward.uplift_bounds)) == ("penalty", [0.0, 1.0])


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        ("cpu", {"tasks_per_node": 1, "nodes": 1, "gpus_per_node": None, "cpus_per_task": 2}),
        ("ddp_sim", {"tasks_per_node": 2, "nodes": 1, "gpus_per_node": None, "cpus_per_task": 1}),
        ("gpu", {"tasks_per_node": 1, "nodes": 1, "gpus_per_node": 1, "cpus_per_task": 4}),
        ("ddp", {"tasks_per_node": 8, "nodes": 1, "gpus_per_node": 8, "cpus_per_task": 4}),
        ("fsdp", {"tasks_per_node": 8, "nodes": 1, "gpus_per_node": 8, "cpus_per_task": 4}),
    ],
)
def test_slurm_launcher_resources_follow_the_trainer(hardware, expected, tmp_path):
    from hydra_plugins.planlift_launcher.slurm_launcher import job_resources

    cfg = compose_with([f"hardware={hardware}", "hydra/launcher=slurm"], tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("PlanliftSlurmLauncher")
    assert launcher.additional_parameters.signal == "USR1@120"
    assert job_resources(cfg, {"gpus_per_node": None, "cpus_per_task": None}) == expected


def test_without_the_slurm_extra_hydra_loads_the_plugin_without_warning():
    """Hydra imports every plugin module at each run; without hydra-submitit-launcher ours must import too
    (else every run warns that the plugin is "incompatible or buggy") and register no launcher."""
    import subprocess
    import sys

    script = """
import sys, warnings
for name in ("hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_submitit_launcher.config",
             "hydra_plugins.hydra_submitit_launcher.submitit_launcher", "submitit"):
    sys.modules[name] = None  # as if the slurm extra were not installed
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    launchers = sorted(c.__name__ for c in Plugins.instance().discover(Launcher))
print(launchers, [str(w.message) for w in caught])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['BasicLauncher'] []", out
