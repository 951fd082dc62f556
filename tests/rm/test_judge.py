"""The judge labeler: strict JSON replies; invalid ones retried, then reported (never guessed)."""

from __future__ import annotations

import json

import pytest

from planlift.executors.base import Executor, ExecutorResult
from planlift.rm.base import MATH_DIMENSIONS
from planlift.rm_groups import (
    JudgeLabeler,
    JudgeReplyError,
    ProceduralGroupSource,
    build_groups,
    parse_judge_reply,
)
from planlift.rubric_rm.rubric import LabelRequest
from planlift.tasks import ProceduralTask

VALID = {**dict.fromkeys(MATH_DIMENSIONS, 7), "solution_strategy": 10, "answer_support": 1, "total": 6.5}


class ScriptedJudge(Executor):
    """Plumbing stand-in: replies from a script, one list per call (text after the prefilled "{")."""

    def __init__(self, script: list[list[str]]) -> None:
        super().__init__()
        self.script = script
        self.greedy: list[bool] = []

    def _generate(self, prompts, n, greedy):
        self.greedy.append(greedy)
        replies = self.script.pop(0)
        assert len(replies) == len(prompts) and n == 1
        return [ExecutorResult(texts=(reply,)) for reply in replies]


def body(reply: dict) -> str:
    return json.dumps(reply)[1:]  # the executor writes what follows the prefilled "{"


def request(kind: str = "skipped_step") -> LabelRequest:
    return LabelRequest("p1", "S1=1 S2=2 S3=S1+S2 S3?", "3", "S3=1+2=3\n", kind)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("{'total': 1}", "invalid JSON"),
        ('{"total": 5}', "missing"),
        (json.dumps({**VALID, "extra": 1}), "unexpected \\['extra'\\]"),
        (json.dumps({**VALID, "total": 11}), "total must be a number in 0..10"),
        (json.dumps({**VALID, "step_coherence": True}), "step_coherence must be a number"),
        (json.dumps(VALID) + " Hope this helps!", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_parse_rejects_anything_but_the_object(reply, error):
    with pytest.raises(JudgeReplyError, match=error):
        parse_judge_reply(reply, MATH_DIMENSIONS)


def test_labels_use_the_authors_mapping_and_retries_are_sampled():
    executor = ScriptedJudge([[body(VALID), "oops"], [body({**VALID, "total": 10})]])
    judge = JudgeLabeler(executor, retries=2)
    first, second = judge.label_batch([request(), request("answer_leaked")])
    # label = min(4, floor(score / 2)); total = score / 10
    assert [first[n] for n in MATH_DIMENSIONS] == [3, 4, 3, 3, 0] and first["total"] == 0.65
    assert second["total"] == 1.0
    assert executor.greedy == [True, False] and judge.failures == []


def test_invalid_replies_are_reported_not_guessed():
    executor = ScriptedJudge([["no json"], ['"total": 3}'], [body({**VALID, "total": -1})]])
    judge = JudgeLabeler(executor, retries=2)
    assert judge.label_batch([request()]) == [None]
    assert len(judge.failures) == 1 and judge.failures[0]["attempts"] == 3
    assert "total must be a number in 0..10" in judge.failures[0]["error"]


def test_a_real_executor_that_cannot_write_json(tmp_path, tiny_checkpoint):
    """A real (untrained tiny) HF executor as judge: every reply is invalid, so every candidate is
    retried, reported in judge_failures.jsonl, and its group dropped — no label is made up. With no group
    left the build is an error that leaves the groups an earlier build wrote."""
    from planlift.errors import DataError
    from planlift.executors import HFExecutor

    executor = HFExecutor(str(tiny_checkpoint), max_new_tokens=12, device="cpu")
    judge = JudgeLabeler(executor, retries=1)
    task = ProceduralTask(sizes={"train": 2, "validation": 1, "test": 0})
    (tmp_path / "train.jsonl").write_text("an earlier build's groups\n")
    source = ProceduralGroupSource(task, sizes={"train": 2, "dev": 1})
    with pytest.raises(
        DataError, match=r"no train group kept of 2 problems \(dropped: \{'too_few_negatives': 2"
    ):
        build_groups(source, tmp_path, labeler=judge)
    assert (tmp_path / "train.jsonl").read_text() == "an earlier build's groups\n"
    failures = [json.loads(line) for line in (tmp_path / "judge_failures.jsonl").read_text().splitlines()]
    assert len(failures) > 0 and all(f["attempts"] == 2 for f in failures)
    assert (
        executor.stats.calls == 2
    )  # the train split: the first attempt and one retry, each one batched call


def test_a_sampling_judge_labels_the_same_for_the_same_seed(tmp_path, tiny_checkpoint):
    """The retries sample from torch's global generator (a local model): build_groups seeds a copy of it with
    `seed`, so two builds give the same replies whatever the caller's stream, which it leaves in place."""
    import torch

    from planlift.errors import DataError
    from planlift.executors import HFExecutor

    task = ProceduralTask(sizes={"train": 2, "validation": 1, "test": 0})
    replies = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        executor = HFExecutor(str(tiny_checkpoint), max_new_tokens=12, temperature=1.0, device="cpu")
        out = tmp_path / str(caller_seed)
        with pytest.raises(DataError, match="no train group kept"):  # every reply is invalid
            build_groups(
                ProceduralGroupSource(task, sizes={"train": 2, "dev": 1}),
                out,
                seed=0,
                labeler=JudgeLabeler(executor, retries=1),
            )
        after = torch.rand(3)
        torch.manual_seed(caller_seed)
        assert torch.equal(after, torch.rand(3)), "the caller's stream was moved"
        replies.append(
            [json.loads(line)["error"] for line in (out / "judge_failures.jsonl").read_text().splitlines()]
        )
    assert replies[0] == replies[1] and len(replies[0]) > 0
    # the check can fail: called without the seeding, the retries' replies follow the caller's stream
    unseeded = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        judge = JudgeLabeler(
            HFExecutor(str(tiny_checkpoint), max_new_tokens=12, temperature=1.0, device="cpu")
        )
        assert judge.label_batch([request()]) == [None]
        unseeded.append(judge.failures[0]["error"])
    assert unseeded[0] != unseeded[1]
