"""GRPO's validation metrics under DDP are those of every judged record: two gloo ranks (ddp_spawn) whose
first records hold different metrics (rank 0's executor call fails, so it has no e2e_acc, uplift or
executor-dependent trace metric until its second record) log what one summary of all their records says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from planlift.data import ProblemDataModule
from planlift.executors.base import Executor, ExecutorResult
from planlift.grpo import GRPOModule
from planlift.judging import BaselineCache, judge_reasonings, pass_at_k, summarize
from planlift.models import load_policy
from planlift.rewards import ExecutorGroundedReward
from planlift.tasks import ProceduralTask

pytestmark = pytest.mark.slow

VAL_PROBLEMS = 8  # rank r judges problems r, r + 2, ... (Lightning's DistributedSampler, no shuffle)


class ProblemExecutor(Executor):
    """Right or wrong by the problem's place in `problems` and by the arm (with or without reasoning); the
    with-reasoning call of problem 0, rank 0's first, fails."""

    def __init__(self, task, problems):
        super().__init__()
        self.baselines = {task.executor_prompt(p, None).user: (i, p) for i, p in enumerate(problems)}

    def _generate(self, prompts, n, greedy):
        results = []
        for prompt in prompts:
            base = max((user for user in self.baselines if prompt.user.startswith(user)), key=len)
            index, problem = self.baselines[base]
            alone = prompt.user == base
            if not alone and index == 0:
                results.append(ExecutorResult(error="scripted failure"))
                continue
            correct = index % 2 == 0 if alone else index % 3 != 1
            wrong = "no answer" if index % 2 else str(float(problem.answer) + 1)
            results.append(ExecutorResult(texts=(problem.answer if correct else wrong,) * n))
        return results


class RecordingGRPO(GRPOModule):
    """Writes every rollout it samples to `<record_dir>/rank<r>.jsonl`, so the test can judge them again."""

    def __init__(self, *args, record_dir: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.record_dir = record_dir

    def sample(self, problems, group_size, greedy=False, seed=None):
        rollout = super().sample(problems, group_size, greedy=greedy, seed=seed)
        entry = {
            "ids": [p.id for p in problems],
            "group_size": group_size,
            "texts": rollout.texts,
            "lengths": rollout.completion_lengths.tolist(),
        }
        with open(Path(self.record_dir) / f"rank{self.global_rank}.jsonl", "a") as file:
            file.write(json.dumps(entry) + "\n")
        return rollout


def validate(tiny_checkpoint, task, executor, record_dir: Path) -> dict[str, float]:
    pl.seed_everything(0, verbose=False)
    module = RecordingGRPO(
        load_policy(str(tiny_checkpoint)),
        ExecutorGroundedReward(executor, task, mode="exec_only"),
        task,
        torch.optim.SGD,
        num_generations=2,
        max_new_tokens=12,
        val_pass_samples=2,
        record_dir=str(record_dir),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    data = ProblemDataModule(task, problems_per_step=2, val_problems=VAL_PROBLEMS, val_batch_size=2)
    trainer.validate(module, datamodule=data, verbose=False)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def rejudged(task, executor, entries):
    """The records of the logged rollouts, judged again in this process, one list for all ranks."""
    problems = {p.id: p for p in task.problems("validation")}
    records = []
    for entry in entries:
        rows = [problems[i] for i in entry["ids"] for _ in range(entry["group_size"])]
        reasonings = [task.extract_reasoning(text) for text in entry["texts"]]
        records += judge_reasonings(task, executor, rows, reasonings, BaselineCache(), samples=1, greedy=True)
    return records


def test_two_ranks_log_the_metrics_of_all_judged_records(tiny_checkpoint, tmp_path):
    task = ProceduralTask(sizes={"train": 4, "validation": VAL_PROBLEMS, "test": 0})
    executor = ProblemExecutor(task, task.problems("validation"))
    logged = validate(tiny_checkpoint, task, executor, tmp_path)

    ranks = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").open()] for r in (0, 1)]
    greedy = [[e for e in entries if e["group_size"] == 1] for entries in ranks]
    sampled = [e for entries in ranks for e in entries if e["group_size"] == 2]
    firsts = [rejudged(task, executor, entries[:1])[0] for entries in greedy]
    # the premise: rank 0's first record lacks what rank 1's first record has
    assert firsts[0].with_reasoning is None and firsts[1].with_reasoning is not None
    assert (
        "trace/right_wrong_reasons" in firsts[1].trace and "trace/right_wrong_reasons" not in firsts[0].trace
    )

    records = rejudged(task, executor, greedy[0] + greedy[1])
    assert len(records) == VAL_PROBLEMS
    expected = {f"val/{key}": value for key, value in summarize(records).items()}
    sampled_records = rejudged(task, executor, sampled)
    expected.update({f"val/sampled/{k}": v for k, v in summarize(sampled_records).items()})
    expected["val/pass@2"] = pass_at_k(sampled_records, 2)
    groups = [sampled_records[i : i + 2] for i in range(0, len(sampled_records), 2)]
    expected["val/pass@2_unjudged"] = sum(any(r.with_reasoning is None for r in g) for g in groups)
    assert expected["val/sampled/executor_failed"] > 0 and expected["val/pass@2_unjudged"] > 0  # counted
    lengths = [n for entries in greedy for e in entries for n in e["lengths"]]
    expected["val/completion_length"] = sum(lengths) / len(lengths)
    assert expected["val/executor_failed"] == 1
    assert expected["val/e2e_acc"] != expected["val/baseline_acc"]  # a swap between them would show

    assert {k for k in logged if k.startswith("val/")} == set(expected)
    wrong = {k: (logged[k], v) for k, v in expected.items() if logged[k] != pytest.approx(v, abs=1e-6)}
    assert not wrong, f"(logged, expected): {wrong}"
