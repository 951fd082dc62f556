"""Using the RM: in-process batched scoring, the grounded reward with it, the HTTP service and client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import torch

from planlift.errors import ConfigError
from planlift.rewards import ExecutorGroundedReward
from planlift.rm import HttpRM, LearnedRM, RMItem
from planlift.rm.http import RMServiceError, parse_scores
from planlift.rm.learned import RMInput
from planlift.rubric_rm.model import RubricRewardModel
from planlift.tasks import ProceduralTask

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def task():
    return ProceduralTask(sizes={"train": 20, "validation": 5, "test": 0})


def items(task, count=7):
    out = []
    for problem in task.problems("train")[:count]:
        gold = task.gold_reasoning(problem)
        out += [
            RMItem(problem, gold, task.name, task.task_type),
            RMItem(problem, "S3=0+0=0\n", task.name, "math"),
        ]
    return out


def test_learned_rm_scores_in_batched_no_grad_forwards(tiny_rm_dir, task):
    rm = LearnedRM(str(tiny_rm_dir), max_length=256, batch_size=4, device="cpu")
    assert not rm.model.training and not any(p.requires_grad for p in rm.model.parameters())
    batch = items(task)
    scores = rm.score(batch)
    assert rm.forwards == 4  # ceil(14 / 4): one forward per batch
    assert all(isinstance(s, float) and 0 <= s <= 1 for s in scores) and len(set(scores)) > 2
    # the same numbers as the model on each input alone (the "<task>" tag is the task type, "math")
    model = RubricRewardModel.from_pretrained(tiny_rm_dir).eval()
    for item, score in zip(batch[:3], scores[:3], strict=False):
        ids = rm.encode([RMInput(item.problem.text, item.reasoning, "math", "math")])[0]
        with torch.no_grad():
            alone = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).score.item()
        assert score == pytest.approx(alone, abs=1e-5)
    with pytest.raises(ConfigError, match="rm.path"):
        LearnedRM(None)


def test_grounded_reward_uses_the_learned_rm(tiny_rm_dir, task, tiny_checkpoint):
    from planlift.executors import HFExecutor

    rm = LearnedRM(str(tiny_rm_dir), device="cpu")
    reward = ExecutorGroundedReward(
        HFExecutor(str(tiny_checkpoint), max_new_tokens=4, device="cpu"), task, rm
    )
    problems = task.problems("train")[:2]
    completions = [task.gold_reasoning(p) + "</reasoning>" for p in problems for _ in range(2)]
    batch = reward(problems, completions, group_size=2)
    expected = rm.score([RMItem(p, task.extract_reasoning(c), task.name, task.task_type)
                         for p, c in zip([p for p in problems for _ in range(2)], completions, strict=True)])  # fmt: skip
    assert [r.rm for r in batch.records] == pytest.approx(expected)
    assert rm.forwards == 2  # one forward for the reward's batch, one for the check


def test_a_math_rubric_rm_on_a_code_task_fails_when_the_reward_is_built(tiny_rm_dir):
    from planlift.tasks import HumanEvalTask
    from tests.rewards.scripted import ScriptedExecutor

    rm = LearnedRM(str(tiny_rm_dir), device="cpu")
    code = HumanEvalTask()
    with pytest.raises(ConfigError, match=r"rm.path=.*not the one of task='humaneval' \(a code task\)"):
        ExecutorGroundedReward(ScriptedExecutor(code, {}), code, rm, mode="code_gated")


def test_an_rm_max_length_shorter_than_its_input_frame_fails_when_the_reward_is_built(tiny_rm_dir, task):
    from tests.rewards.scripted import ScriptedExecutor

    rm = LearnedRM(str(tiny_rm_dir), max_length=20, device="cpu")
    with pytest.raises(ConfigError, match=r"rm.max_length=20 leaves no room .* \(rm.max_length >= \d+\)"):
        ExecutorGroundedReward(ScriptedExecutor(task, {}), task, rm)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_rm_dir, tmp_path_factory):
    """`python src/serve_rm.py` on 127.0.0.1 and a free port; stopped by PID."""
    port = free_port()
    run_dir = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "src" / "serve_rm.py"), f"rm_path={tiny_rm_dir}", f"port={port}",
               "scorer.batch_size=4", "scorer.device=cpu", f"hydra.run.dir={run_dir}", "log_level=warning"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"server did not start:\n{process.stdout.read().decode()[-3000:]}")
        time.sleep(0.3)
    yield url
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def payload(batch):
    return {
        "items": [
            {"problem": i.problem.text, "reasoning": i.reasoning, "task_name": "math", "task_type": "math"}
            for i in batch
        ],
        "max_length": 256,
        "batch_size": 3,
    }


def test_service_scores_as_in_process(server, tiny_rm_dir, task):
    batch = items(task, 4)
    before = requests.get(f"{server}/health", timeout=5).json()
    answer = requests.post(f"{server}/score", json=payload(batch), timeout=30)
    assert answer.status_code == 200
    after = requests.get(f"{server}/health", timeout=5).json()
    assert after["forwards"] - before["forwards"] == 3  # 8 items in batches of the request's batch_size 3
    scores = answer.json()["scores"]
    local = LearnedRM(str(tiny_rm_dir), max_length=256, device="cpu").score(batch)
    assert scores == pytest.approx(local, abs=1e-5)
    assert requests.post(f"{server}/score", json={"items": []}, timeout=10).json() == {"scores": []}


def test_service_validates_input(server):
    bad = {"items": [{"problem": "p", "task_name": "math", "task_type": "math"}]}
    answer = requests.post(f"{server}/score", json=bad, timeout=10)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail[0]["loc"] == ["body", "items", 0, "reasoning"] and "required" in detail[0]["msg"].lower()
    answer = requests.post(f"{server}/score", json={"items": [], "batch_size": 0}, timeout=10)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "batch_size"]
    assert requests.post(f"{server}/score", json={"max_length": 5}, timeout=10).status_code == 422
    short = {"items": [{"problem": "p", "reasoning": "r", "task_name": "math", "task_type": "math"}]}
    answer = requests.post(f"{server}/score", json={**short, "max_length": 7}, timeout=10)
    assert answer.status_code == 422 and "leaves no room for the reasoning" in answer.json()["detail"]


def test_http_rm_against_the_service(server, tiny_rm_dir, task):
    batch = items(task, 3)
    rm = HttpRM(f"{server}/score", max_length=256, request_items=4)
    local = LearnedRM(str(tiny_rm_dir), max_length=256, device="cpu").score(batch)
    assert rm.score(batch) == pytest.approx(local, abs=1e-5)
    assert rm.requests == 2 and rm.failed_items == 0  # 6 items, 4 per request


def test_http_rm_failures_become_none(task):
    batch = items(task, 1)
    rm = HttpRM(f"http://127.0.0.1:{free_port()}/score", retries=2, backoff=0.01)  # nothing listens
    assert rm.score(batch) == [None, None]
    assert rm.attempts == 3 and rm.failed_requests == 1 and rm.failed_items == 2

    # a listener that accepts and never answers: the read times out, is retried, then masked
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        rm = HttpRM(
            f"http://127.0.0.1:{listener.getsockname()[1]}/score", timeout=0.3, retries=1, backoff=0.01
        )
        start = time.monotonic()
        assert rm.score(batch) == [None, None]
        assert rm.attempts == 2 and time.monotonic() - start < 5
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def test_parse_scores():
    assert parse_scores({"scores": [0.5, None, 1]}, 3) == [0.5, None, 1.0]
    assert parse_scores([0.25], 1) == [0.25]
    for answer, message in (
        ({"scores": [0.5]}, "1 scores for 2 items"),
        ({"score": [0.5, 0.5]}, "expected"),
        ([0.5, "high"], "not a finite number"),
        ([0.5, float("nan")], "not a finite number"),
    ):
        with pytest.raises(RMServiceError, match=message):
            parse_scores(answer, 2)


def test_http_rm_rejects_bad_answers(server, task):
    rm = HttpRM(f"{server}/nope", retries=3)  # 404: a client error, not retried
    assert rm.score(items(task, 1)) == [None, None] and rm.attempts == 1
    with pytest.raises(ConfigError, match="rm.url"):
        HttpRM("localhost:8000")
