"""OpenAIExecutor against the fault server (tests/faults/server.py) in front of a stub OpenAI server:
every fault kind is retried within the budget, then masked and counted; `generate` never raises."""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest

from planlift.executors import OpenAIExecutor
from planlift.tasks.base import ChatPrompt
from tests.faults.server import KINDS, FaultServer, fault_servers
from tests.faults.upstreams import JsonServer, stub_completions

PROMPT = ChatPrompt(user="S1=3 S2=4 S3=S1+S2 S3?\n", prefill="answer=", stop=("\n",))
# what the executor calls a failed attempt of each fault kind (None: the reply is usable)
CLIENT_KIND = {
    "http_5xx": "http_503",
    "http_429": "http_429",
    "hang": "timeout",
    "client_gone": "timeout",  # not injected: the upstream answered after the client gave up
    "drop": "connection",
    "truncated": "truncated",
    "malformed": "malformed",
    "error_200": "error_reply",
    "fewer": "short_reply",  # n=1: no choice left
    "more": None,
    "missing_value": "no_text",
}
# per attempt: long enough for a localhost round trip through the proxy on a loaded 2-core CI box (0.3 s
# timed out once there, the retry of a fault that had nothing to do with time), short enough for the hangs
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def upstream():
    with JsonServer(stub_completions) as server:
        yield server.url


@pytest.fixture
def faults(upstream):
    """faults(**plan) -> a started fault server in front of the stub; stopped after the test."""
    with fault_servers(upstream, "openai") as start:
        yield start


def executor(server: FaultServer, **kwargs) -> OpenAIExecutor:
    settings = {"timeout_s": TIMEOUT_S, "backoff_s": 0.0, "max_retries": 1, **kwargs}
    return OpenAIExecutor(f"{server.url}/v1", "executor", **settings)


@pytest.mark.parametrize("kind", KINDS)
def test_one_fault_is_retried_and_the_retry_answers(faults, kind):
    server = faults(kinds=(kind,), faulty_attempts=1)
    client = executor(server)
    result = client.generate([PROMPT], n=1)[0]
    assert result.ok and result.texts == ("0",)
    expected = CLIENT_KIND[kind]
    if expected is None:  # extra choices are dropped: the first reply is used
        assert client.retries == 0 and client.extra_choices == 1
    else:
        assert client.retries == 1 and dict(client.attempt_failures) == {expected: 1}
        (request,) = server.requests()  # one request, an id per attempt (vLLM refuses a running id)
        assert request["headers"] == [f"{request['id']}.0", f"{request['id']}.1"]
    assert client.metrics()["failed_requests"] == 0
    assert server.stats()["injected"] == {kind: 1} and server.stats()["exhausted_requests"] == 0


@pytest.mark.parametrize("kind", [k for k in KINDS if CLIENT_KIND[k] is not None])
def test_a_fault_on_every_attempt_masks_the_prompt_and_counts_it(faults, kind):
    server = faults(kinds=(kind,), faulty_attempts=99)
    client = executor(server)
    ok, failed = client.generate([ChatPrompt(user="fine\n"), PROMPT], n=1)  # never raises
    assert not failed.ok and failed.error.startswith(CLIENT_KIND[kind])
    assert not ok.ok  # every request gets the fault
    metrics = client.metrics()
    assert metrics["failed_requests"] == 2 and metrics[f"failed_requests/{CLIENT_KIND[kind]}"] == 2
    assert metrics[f"failed_attempts/{CLIENT_KIND[kind]}"] == 4 and metrics["failed_prompts"] == 2
    stats = server.stats()
    assert stats["attempts"] == 4 and stats["exhausted"] == {kind: 2}  # 1 + max_retries each


def test_a_short_reply_keeps_its_choices_and_fetches_the_rest(faults):
    server = faults(kinds=("fewer",), faulty_attempts=1)
    client = executor(server)
    result = client.generate([PROMPT], n=4)[0]
    assert result.ok and len(result.texts) == 4
    assert client.n_fallback_requests == 2 and client.n_supported is None  # one short reply is no evidence
    assert server.stats()["exhausted_requests"] == 0


def test_retry_after_is_honoured_and_capped(faults):
    client = executor(faults(kinds=("http_429",), faulty_attempts=1, retry_after="0.4"))
    start = time.monotonic()
    assert client.generate([PROMPT], n=1)[0].ok
    assert time.monotonic() - start >= 0.4
    client = executor(faults(kinds=("http_429",), faulty_attempts=1, retry_after="3600"), backoff_max_s=0.1)
    start = time.monotonic()
    assert client.generate([PROMPT], n=1)[0].ok  # a server cannot stall the run
    assert time.monotonic() - start < 2


def test_masked_prompts_are_exactly_the_requests_that_exhausted_their_retries(faults):
    """30% of attempts fail, of every kind: the failed prompts are those whose requests (their
    X-Request-Id: <call>.<prompt>.<serial>) got no usable reply, and the counts agree by kind."""
    server = faults(rate=0.3, seed=3, hang_s=5.0)
    client = executor(server, max_concurrency=16, breaker_threshold=1000)
    prompts = [ChatPrompt(user=f"S1={i} S1?\n", prefill="answer=", stop=("\n",)) for i in range(48)]
    results = client.generate(prompts, n=2)
    requests = server.requests()
    exhausted = {int(r["id"].split(".")[1]) for r in requests if not r["usable"]}
    assert exhausted and {i for i, r in enumerate(results) if not r.ok} == exhausted
    assert all(len(r.texts) == 2 for r in results if r.ok)
    stats = server.stats()
    assert len(stats["injected"]) >= 8  # most kinds were drawn
    by_kind = Counter(CLIENT_KIND[kind] for kind, count in stats["exhausted"].items() for _ in range(count))
    metrics = client.metrics()
    assert {k: metrics[f"failed_requests/{k}"] for k in by_kind} == dict(by_kind)
    assert metrics["failed_requests"] == stats["exhausted_requests"]
    assert metrics["requests"] == stats["requests"]
    failed_attempts = sum(v for k, v in metrics.items() if k.startswith("failed_attempts/"))
    assert failed_attempts == sum(len(r["attempts"]) - r["usable"] for r in requests)  # a usable one ends it


def test_a_server_that_ignores_n_is_decided_on_several_replies_and_logged(faults, caplog):
    client = executor(faults(rate=0.0, ignore_n=True), max_concurrency=1)
    with caplog.at_level(logging.WARNING, "planlift.executors.openai"):
        assert all(r.ok and len(r.texts) == 3 for r in client.generate([PROMPT, PROMPT], n=3))
        assert client.n_supported is None and "ignores n" not in caplog.text
        assert client.generate([PROMPT], n=3)[0].ok
    assert client.n_supported is False and "ignores n" in caplog.text


def test_a_reply_the_client_stopped_waiting_for_is_not_counted_usable():
    """The upstream answers the first attempt after the client's timeout (no fault injected): the proxy
    records that attempt as `client_gone`, not as a clean reply, and the retry as the usable one."""
    first = {"slow": True}

    def slow_once(path, body, raw):
        if first.pop("slow", False):
            time.sleep(3 * TIMEOUT_S)
        return stub_completions(path, body, raw)

    with JsonServer(slow_once) as upstream, fault_servers(upstream.url, "openai") as start:
        server = start(rate=0.0)
        client = executor(server)
        assert client.generate([PROMPT], n=1)[0].ok
        assert dict(client.attempt_failures) == {"timeout": 1}
        deadline = time.monotonic() + 5  # the proxy settles the slow attempt once the upstream answers
        while server.requests()[0]["attempts"][0] == "ok" and time.monotonic() < deadline:
            time.sleep(0.05)
        (request,) = server.requests()
        assert request["attempts"] == ["client_gone", "ok"] and request["usable"]
        assert server.stats()["exhausted_requests"] == 0
