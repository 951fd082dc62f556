"""Evaluation: every arm, the outputs (JSONL, JSON summary, TensorBoard), the executor-alone cache, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from planlift.errors import ConfigError
from planlift.executors import HFExecutor
from planlift.models import load_policy
from planlift.offline_eval import OfflineEvaluation
from tests.test_configs import CONF, check_targets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parts(trained_bootstrap, procedural_task):
    executor = HFExecutor(str(trained_bootstrap.ensure().checkpoint("executor")), max_new_tokens=8)
    policy = load_policy(str(trained_bootstrap.ensure().checkpoint("planner")))
    return procedural_task, executor, policy


def test_all_arms_and_outputs(parts, tmp_path):
    task, executor, policy = parts
    evaluator = OfflineEvaluation(
        task,
        executor,
        policy,
        str(tmp_path / "run"),
        limit=6,
        batch_size=4,
        planner_max_new_tokens=48,
        cache_dir=str(tmp_path / "cache"),
        progress_bar=False,
    )
    summary = evaluator.run()
    for key in (
        "e2e_acc",
        "executor_alone_acc",
        "planner/uplift",
        "planner/leakage",
        "gold/acc",
        "gold/leakage",
    ):
        assert 0 <= abs(summary[key]) <= 1, key
    assert summary["problems"] == 6 and summary["alone/from_cache"] == 0
    assert summary["planner/uplift"] == pytest.approx(summary["planner/acc"] - summary["alone/acc"])
    assert "planner/trace/step_acc" in summary  # the procedural task's trace metrics
    assert set(summary["planner/uplift_distribution"]) >= {"mean", "median", "negative", "zero", "positive"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "problems.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert row["planner_completion"] and row["planner"]["reasoning"] is not None
        assert len(row["alone"]["executor_outputs"]) == len(row["planner"]["executor_outputs"]) == 1
        assert row["gold"]["verdicts"][0]["status"] in ("correct", "wrong", "no_answer")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["e2e_acc"] == summary["e2e_acc"]

    from tbparse import SummaryReader

    tags = set(SummaryReader(str(tmp_path / "run" / "tensorboard")).scalars.tag)
    assert {"eval/e2e_acc", "eval/alone/acc", "eval/planner/uplift", "eval/gold/acc"} <= tags

    # a second evaluation with the same executor takes the executor-alone arm from the cache
    again = OfflineEvaluation(
        task,
        executor,
        None,
        str(tmp_path / "again"),
        limit=6,
        arms=["alone", "gold"],
        cache_dir=str(tmp_path / "cache"),
        progress_bar=False,
    ).run()
    assert again["alone/from_cache"] == 6 and again["alone/acc"] == summary["alone/acc"]
    assert "planner/acc" not in again


def test_bad_settings_are_clear(parts, tmp_path):
    task, executor, policy = parts
    with pytest.raises(ConfigError, match="no planner model"):
        OfflineEvaluation(task, executor, None, str(tmp_path))
    with pytest.raises(ConfigError, match="executor_samples=1"):
        OfflineEvaluation(task, executor, policy, str(tmp_path), executor_samples=3)
    with pytest.raises(ConfigError, match="arms"):
        OfflineEvaluation(task, executor, policy, str(tmp_path), arms=["oracle"])


@pytest.mark.parametrize("task", ["gsm8k", "humaneval", "mbpp", "procedural"])
def test_evaluate_config_composes_and_binds(task):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"task={task}"])
    assert check_targets(cfg.task) >= 1 and check_targets(cfg.model) == 1 and check_targets(cfg.executor) == 1
    assert cfg.arms == ["planner", "alone", "gold"]


@pytest.mark.slow
def test_cli_on_gsm8k_with_smollm2(tmp_path):
    command = [
        sys.executable,
        str(ROOT / "src" / "evaluate.py"),
        "task=gsm8k",
        "limit=2",
        "batch_size=2",
        "planner_max_new_tokens=32",
        "torch_threads=1",
        "progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["problems"] == 2 and summary["gold/leakage"] == 1.0
    assert {"e2e_acc", "executor_alone_acc", "gold/acc", "planner/leakage"} <= set(summary)


def test_an_alone_program_the_sandbox_could_not_run_is_left_out(tmp_path):
    """As in the planner and gold arms, a verdict the sandbox could not reach is no failure of the
    executor: alone/acc and alone/pass_rate leave it out, alone/sandbox_failed counts it (a task double whose sandbox
    fails on the reply "broken"; never a proof that a sandbox works)."""
    from planlift.executors.base import Executor, ExecutorResult
    from planlift.tasks import ProceduralTask
    from planlift.tasks.base import Verdict

    class FlakySandbox(ProceduralTask):
        task_type = "code"  # pass rates are summarised for code tasks

        def verify(self, problem, executor_output):
            if executor_output == "broken":
                return Verdict(correct=False, pass_rate=0.0, status="sandbox_error")
            return super().verify(problem, executor_output)

    task = FlakySandbox(sizes={"train": 4, "validation": 4, "test": 4})
    problems = task.problems("test")
    broken = {problems[0].text, problems[1].text}

    class Alone(Executor):  # the right answer, except where the sandbox breaks
        def _generate(self, prompts, n, greedy):
            by_text = {p.text: p for p in problems}
            results = []
            for prompt in prompts:
                problem = next(by_text[t] for t in by_text if t in prompt.user)
                reply = "broken" if problem.text in broken else task.executor_target(problem)
                results.append(ExecutorResult(texts=(reply,) * n))
            return results

    summary = OfflineEvaluation(
        task, Alone(), None, str(tmp_path / "run"), arms=["alone"], progress_bar=False
    ).run()
    assert summary["alone/acc"] == 1.0 and summary["alone/sandbox_failed"] == 2
    assert summary["alone/pass_rate"] == 1.0  # the unjudged programs' 0.0 is no pass rate


def test_executor_failures_without_reasoning_are_counted_and_all_failing_is_an_error(tmp_path, caplog):
    """A double whose executor fails on some prompts (plumbing only): alone/acc leaves them out, the summary
    and problems.jsonl say so; when it answers none, nothing was measured and the run stops with an error."""
    from planlift.errors import ExecutorUnavailableError
    from planlift.executors.base import Executor, ExecutorResult
    from planlift.tasks import ProceduralTask

    task = ProceduralTask(sizes={"train": 4, "validation": 4, "test": 4})
    problems = task.problems("test")

    class Failing(Executor):
        def __init__(self, failing):
            super().__init__()
            self.failing = failing

        def _generate(self, prompts, n, greedy):
            results = []
            for prompt in prompts:
                problem = next(p for p in problems if p.text in prompt.user)
                if problem.id in self.failing:
                    results.append(ExecutorResult(error="connection refused (127.0.0.1:9)"))
                else:
                    results.append(ExecutorResult(texts=(task.executor_target(problem),) * n))
            return results

    run = tmp_path / "some"
    with caplog.at_level("WARNING", logger="planlift.offline_eval"):
        summary = OfflineEvaluation(
            task, Failing({problems[0].id}), None, str(run), arms=["alone"], progress_bar=False
        ).run()
    assert summary["alone/executor_failed"] == 1 and summary["alone/acc"] == 1.0
    assert "failed on 1 of 4 problems" in caplog.text and "connection refused" in caplog.text
    rows = [json.loads(line) for line in (run / "problems.jsonl").read_text().splitlines()]
    assert [r["alone"]["executor_error"] for r in rows].count("connection refused (127.0.0.1:9)") == 1

    every = Failing({p.id for p in problems})
    with pytest.raises(ExecutorUnavailableError, match="failed on all 4 problems.*connection refused"):
        OfflineEvaluation(task, every, None, str(tmp_path / "none"), arms=["alone"], progress_bar=False).run()


def test_arms_are_scored_on_the_problems_every_arm_judged(tmp_path, caplog):
    """A reasoning that makes the executor fail (one too long for its context) must not leave its problem
    out of the planner's accuracy while the problem stays in alone's: alone is right on 2 of 4 problems,
    the gold reasoning's executor on every problem it answers, and it fails on the two problems alone gets
    right. Over each arm's own problems that read planner 1.0 vs alone 0.5; over the common ones, 1.0 vs 0.0
    on two problems, with every failure counted and a warning."""
    from planlift.executors.base import Executor, ExecutorResult
    from planlift.tasks import ProceduralTask

    task = ProceduralTask(sizes={"train": 4, "validation": 4, "test": 4})
    problems = task.problems("test")
    alone_right = {problems[0].id, problems[1].id}

    class ContextLimited(Executor):
        def _generate(self, prompts, n, greedy):
            results = []
            for prompt in prompts:
                problem = next(p for p in problems if p.text in prompt.user)
                alone = prompt.user == task.executor_prompt(problem, None).user
                if alone:
                    reply = task.executor_target(problem) if problem.id in alone_right else "no idea"
                    results.append(ExecutorResult(texts=(reply,) * n))
                elif problem.id in alone_right:
                    results.append(ExecutorResult(error="prompt longer than max_model_len"))
                else:
                    results.append(ExecutorResult(texts=(task.executor_target(problem),) * n))
            return results

    with caplog.at_level("WARNING", logger="planlift.offline_eval"):
        summary = OfflineEvaluation(
            task, ContextLimited(), None, str(tmp_path / "run"), arms=["alone", "gold"], progress_bar=False
        ).run()
    assert summary["problems"] == 4 and summary["problems_judged"] == 2
    assert (summary["alone/acc"], summary["gold/acc"], summary["gold/uplift"]) == (0.0, 1.0, 1.0)
    assert summary["gold/executor_failed"] == 2 and summary["alone/executor_failed"] == 0
    assert "2 of 4 problems were judged in every arm" in caplog.text and "gold 2" in caplog.text
