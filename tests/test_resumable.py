"""Counters and decisions of executors and RMs survive a checkpoint round trip (weights_only loading)."""

from __future__ import annotations

import io
from collections import Counter

import torch

from planlift.executors.openai import OpenAIExecutor
from planlift.rm.http import HttpRM


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save({"planlift": state}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["planlift"]  # as Lightning loads last.ckpt


def test_openai_executor_continues_its_seeds_counters_and_n_decision():
    used = OpenAIExecutor(base_url="http://127.0.0.1:9/v1", model="m", seed=5)
    used.requests_sent, used.retries, used._seed_counter = 40, 7, 33
    used.request_failures = Counter({"http_5xx": 2, "timeout": 1})
    used.n_supported, used.stats.calls = False, 12
    fresh = OpenAIExecutor(base_url="http://127.0.0.1:9/v1", model="m", seed=5)
    fresh.load_state_dict(round_trip(used.state_dict()))
    assert fresh.metrics() == used.metrics()
    assert (fresh._seed_counter, fresh.n_supported) == (33, False)
    assert isinstance(fresh.request_failures, Counter)


def test_http_rm_continues_its_failure_counts():
    used = HttpRM(url="http://127.0.0.1:9/score")
    used.requests, used.failed_items = 9, 3
    used.attempt_failures = Counter({"http_429": 4})
    fresh = HttpRM(url="http://127.0.0.1:9/score")
    fresh.load_state_dict(round_trip(used.state_dict()))
    assert fresh.metrics() == used.metrics() and fresh.metrics()["failed_items"] == 3
