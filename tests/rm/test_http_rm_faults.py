"""HttpRM against the fault server (tests/faults/server.py) in front of a stub scoring service: every
fault kind is retried within the budget, then its items are scored None (masked by the reward) and
counted; `score` never raises."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from planlift.rewards import ExecutorGroundedReward
from planlift.rm import HttpRM, RMItem
from planlift.tasks import ProceduralTask
from planlift.tasks.base import Problem
from tests.faults.server import KINDS, FaultServer, fault_servers
from tests.faults.upstreams import JsonServer, stub_score, stub_scores
from tests.rewards.scripted import ScriptedExecutor

# what the RM client calls a failed attempt of each fault kind (every kind is unusable for the RM)
CLIENT_KIND = {
    "http_5xx": "http_503",
    "http_429": "http_429",
    "hang": "timeout",
    "client_gone": "timeout",  # not injected: the upstream answered after the client gave up
    "drop": "connection",
    "truncated": "truncated",
    "malformed": "malformed",
    "error_200": "error_reply",
    "fewer": "wrong_count",
    "more": "wrong_count",
    "missing_value": "bad_score",
}


def items(count: int) -> list[RMItem]:
    return [
        RMItem(Problem(f"p{i}", f"S1={i} S1?", str(i)), f"S1={i}\n", "procedural", "math")
        for i in range(count)
    ]


# per attempt, as in tests/executors/test_openai_faults.py (0.2 s left no room for a loaded CI box)
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def upstream():
    with JsonServer(stub_scores) as server:
        yield server.url


@pytest.fixture
def faults(upstream):
    """faults(**plan) -> a started fault server in front of the stub; stopped after the test."""
    with fault_servers(upstream, "rm") as start:
        yield start


def client(server: FaultServer, **kwargs) -> HttpRM:
    settings = {"timeout": TIMEOUT_S, "retries": 1, "backoff": 0.0, **kwargs}
    return HttpRM(f"{server.url}/score", **settings)


@pytest.mark.parametrize("kind", KINDS)
def test_one_fault_is_retried_and_the_retry_scores(faults, kind):
    server = faults(kinds=(kind,), faulty_attempts=1)
    rm = client(server)
    assert rm.score(items(3)) == [stub_score(item.problem.text) for item in items(3)]
    metrics = rm.metrics()
    assert metrics["retries"] == 1 and metrics[f"failed_attempts/{CLIENT_KIND[kind]}"] == 1
    assert metrics["failed_requests"] == 0 and metrics["failed_items"] == 0
    assert server.stats()["injected"] == {kind: 1} and server.stats()["exhausted_requests"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_on_every_attempt_masks_the_items_and_counts_them(faults, kind):
    server = faults(kinds=(kind,), faulty_attempts=99)
    rm = client(server, request_items=2)
    assert rm.score(items(3)) == [None, None, None]  # never raises
    metrics = rm.metrics()
    assert metrics["failed_requests"] == 2 and metrics["failed_items"] == 3
    assert metrics[f"failed_requests/{CLIENT_KIND[kind]}"] == 2
    assert metrics[f"failed_attempts/{CLIENT_KIND[kind]}"] == 4 and metrics["retries"] == 2
    assert server.stats()["exhausted"] == {kind: 2} and server.stats()["attempts"] == 4


def test_retry_after_is_honoured_and_capped(faults):
    rm = client(faults(kinds=("http_429",), faulty_attempts=1, retry_after="0.4"))
    start = time.monotonic()
    assert rm.score(items(1)) == [stub_score("S1=0 S1?")]
    assert time.monotonic() - start >= 0.4
    rm = client(faults(kinds=("http_429",), faulty_attempts=1, retry_after="3600"), backoff_max=0.1)
    start = time.monotonic()
    assert rm.score(items(1))[0] is not None and time.monotonic() - start < 2


def test_masked_items_are_exactly_those_of_the_requests_that_exhausted_their_retries(faults):
    """30% of attempts fail, of every kind: None marks exactly the items of the requests (X-Request-Id:
    <call>.<first item>.<serial>) that got no usable answer, and the counts agree by kind."""
    server = faults(rate=0.3, seed=3)
    rm = client(server, request_items=1)
    batch = items(40)
    scores = rm.score(batch)
    requests = server.requests()
    exhausted = {int(r["id"].split(".")[1]) for r in requests if not r["usable"]}
    assert exhausted and {i for i, s in enumerate(scores) if s is None} == exhausted
    assert all(s == stub_score(batch[i].problem.text) for i, s in enumerate(scores) if s is not None)
    stats = server.stats()
    assert len(stats["injected"]) >= 8  # most kinds were drawn
    by_kind = Counter(CLIENT_KIND[kind] for kind, count in stats["exhausted"].items() for _ in range(count))
    metrics = rm.metrics()
    assert {k: metrics[f"failed_requests/{k}"] for k in by_kind} == dict(by_kind)
    assert metrics["failed_items"] == metrics["failed_requests"] == stats["exhausted_requests"]
    assert metrics["requests"] == stats["requests"] == 40
    failed_attempts = sum(v for k, v in metrics.items() if k.startswith("failed_attempts/"))
    assert failed_attempts == sum(len(r["attempts"]) - r["usable"] for r in requests)


def test_the_reward_masks_what_the_rm_could_not_score_and_logs_the_rm_counters(faults):
    """A failed RM reply masks its samples (rm_error), never scores them; train/rm/* carries the counts."""
    task = ProceduralTask(sizes={"train": 20, "validation": 5, "test": 5})
    problem = task.problems("train")[0]
    script = {"A\n": [problem.answer], "B\n": [problem.answer], None: ["x"]}
    rm = client(faults(kinds=("missing_value",), faulty_attempts=99), request_items=1)
    executor = ScriptedExecutor(task, script)
    reward = ExecutorGroundedReward(executor, task, rm=rm, mode="grounded", max_masked_fraction=1.0)
    batch = reward([problem], ["A\n</reasoning>", "B\n</reasoning>"], group_size=2)
    assert [r.mask_reason for r in batch.records] == ["rm_error", "rm_error"]
    assert all(r.final is None and r.rm is None for r in batch.records)
    metrics = batch.metrics()
    assert metrics["train/reward/masked/rm_error"] == 2 and metrics["train/reward/masked_frac"] == 1.0
    assert metrics["train/rm/failed_items"] == 2 and metrics["train/rm/failed_requests/bad_score"] == 2
