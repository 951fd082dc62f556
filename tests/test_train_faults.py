"""Slow tier: a short training run survives 30% faults on both of its HTTP services.

`python src/train.py executor=openai rm=http` with the executor's API (the debug bootstrap's executor,
served by tests/faults/upstreams.py) and the RM service (`src/serve_rm.py`, a tiny RM) each behind a
fault server (tests/faults/server.py) that injects every fault kind into 30% of the attempts. The run
must complete, and from the servers' per-request records (X-Request-Id: <call>.<prompt or first
item>.<serial>) the test rebuilds which samples of each step lost a reply: exactly those are masked,
with the reason the reward gives them, and no other; the clients' failure counts equal the requests
that exhausted their retries.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch

from tests.executors.conftest import free_port, stop, wait_for
from tests.faults.server import FaultPlan, FaultServer
from tests.faults.upstreams import JsonServer, ModelCompletions
from tests.test_train_e2e import scalars, train

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
# the executor's / the RM client's name for the last failed attempt of an exhausted request, per fault
EXECUTOR_KIND = {"http_5xx": "http_503", "http_429": "http_429", "hang": "timeout", "drop": "connection",
                 "truncated": "truncated", "malformed": "malformed", "error_200": "error_reply",
                 "fewer": "short_reply", "missing_value": "no_text"}  # fmt: skip
RM_KIND = {**EXECUTOR_KIND, "fewer": "wrong_count", "more": "wrong_count", "missing_value": "bad_score"}


@pytest.fixture
def rm_service(tmp_path):
    """`python src/serve_rm.py` with a randomly initialised tiny RM on 127.0.0.1; yields its root URL."""
    from planlift.rubric_rm.model import build_reward_model
    from tests.rm.conftest import TINY

    rm_dir = tmp_path / "tiny_rm"
    model = build_reward_model(tiny=TINY, seed=1)
    with torch.no_grad():  # heads large enough that scores differ across reasonings
        for head in [*model.dimension_heads, model.total_head]:
            head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    model.save_pretrained(rm_dir)
    port = free_port()
    log_path = tmp_path / "serve_rm.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "src" / "serve_rm.py"), f"rm_path={rm_dir}", f"port={port}",
               "scorer.device=cpu", f"hydra.run.dir={tmp_path / 'serve_rm'}", "log_level=warning"]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", process, log_path, timeout_s=120)
        yield url
    finally:
        stop(process)


@pytest.fixture
def debug_config(tmp_path, monkeypatch):
    """The debug preset composed with a fresh cache (PLANLIFT_CACHE: no validation baseline is cached yet); its
    bootstrap is built there, or found in PLANLIFT_BOOTSTRAP_CACHE when that is set (.ci/run)."""
    import hydra

    from tests.test_configs import compose_with

    cache = tmp_path / "cache"
    monkeypatch.setenv("PLANLIFT_CACHE", str(cache))
    cfg = compose_with(["debug=fast"], tmp_path / "compose")
    bootstrap = hydra.utils.instantiate(cfg.bootstrap, task=hydra.utils.instantiate(cfg.task))
    return cfg, cache, bootstrap.ensure().checkpoint("executor")


def by_call(records: list[dict]) -> list[dict[int, list[dict]]]:
    """Requests grouped per call (in the order calls began), then per prompt (or first item) index."""
    calls: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for record in records:  # in arrival order
        call, index, _ = record["id"].split(".")
        calls[call][int(index)].append(record)
    return list(calls.values())


def failed(call: dict[int, list[dict]]) -> set[int]:
    """Indices with a request that got no usable reply on any attempt."""
    return {index for index, requests in call.items() if any(not r["usable"] for r in requests)}


def expected_masks(executor_records, rm_records, samples: int) -> list[list[str | None]]:
    """Per training step, per sample: the mask reason the reward must give (None: scored)."""
    steps = []  # training calls are sampled (temperature > 0); validation is greedy
    for call in by_call(executor_records):
        if next(iter(call.values()))[0]["body"]["temperature"] == 0:
            continue
        if len(call) == samples:  # one prompt per sample, with its reasoning
            steps.append({"reasoning": call, "baseline": {}})
        else:  # the executor alone, one prompt per problem not in the baseline cache
            steps[-1]["baseline"] = call
    rm_calls = by_call(rm_records)
    assert len(steps) == len(rm_calls) == STEPS
    masks = []
    for step, rm_call in zip(steps, rm_calls, strict=True):
        problems = [
            item["problem"] for start in sorted(rm_call) for item in rm_call[start][0]["body"]["items"]
        ]
        rm_failed = {
            start + i for start in failed(rm_call) for i in range(len(rm_call[start][0]["body"]["items"]))
        }
        baseline_failed = {
            problem
            for index in failed(step["baseline"])
            for problem in problems
            if f"{problem}\n" in step["baseline"][index][0]["body"]["prompt"]
        }
        reasons = []
        for j, problem in enumerate(problems):
            if j in failed(step["reasoning"]):
                reasons.append("executor_error")
            elif problem in baseline_failed:
                reasons.append("baseline_executor_error")
            elif j in rm_failed:
                reasons.append("rm_error")
            else:
                reasons.append(None)
        masks.append(reasons)
    return masks


def logged_masks(run_dir: Path) -> list[list[str | None]]:
    """Per step, per sample: the mask reason in the logged sample table (train/samples), None if scored."""
    from tbparse import SummaryReader

    frame = SummaryReader(str(run_dir / "tensorboard")).text
    tables = frame[frame.tag == "train/samples"].sort_values("step").value.tolist()
    masks = []
    for table in tables:
        rows = [line for line in table.splitlines() if line.startswith("| `")]
        reasons = [(re.search(r" masked=(\w+) \|$", row) or [None, None])[1] for row in rows]
        assert all(("final=" in row) == (reason is None) for row, reason in zip(rows, reasons, strict=True))
        masks.append(reasons)
    return masks


def final(logged, tag: str) -> float:
    return logged[tag][-1][1] if tag in logged else 0.0


@pytest.mark.slow
def test_a_run_survives_30_percent_faults_on_the_executor_and_the_rm(tmp_path, debug_config, rm_service):
    cfg, cache, executor_checkpoint = debug_config
    samples = cfg.data.problems_per_step * cfg.algorithm.num_generations
    with (
        JsonServer(ModelCompletions(str(executor_checkpoint))) as upstream,
        FaultServer(upstream.url, "openai", FaultPlan(rate=0.3, seed=0, hang_s=60)) as executor_faults,
        FaultServer(rm_service, "rm", FaultPlan(rate=0.3, seed=0, hang_s=60)) as rm_faults,
    ):
        run_dir = tmp_path / "run"
        train(
            run_dir,
            cache,
            "executor=openai",
            f"executor.base_url={executor_faults.url}/v1",
            "executor.timeout_s=3",
            "executor.max_retries=1",
            "executor.backoff_s=0.05",
            "executor.backoff_max_s=1",  # Retry-After: 1 is honoured
            "executor.breaker_threshold=1000",
            "executor.max_concurrency=4",
            "rm=http",
            f"rm.url={rm_faults.url}/score",
            "rm.timeout=3",
            "rm.retries=1",
            "rm.backoff=0.05",
            "rm.backoff_max=1",
            "rm.request_items=1",  # one request per sample
            "rm.max_length=256",
            f"trainer.max_steps={STEPS}",
            "trainer.val_check_interval=3",  # the last step logs after the last validation's requests
        )
        executor_records, rm_records = executor_faults.requests(), rm_faults.requests()
        executor_stats, rm_stats = executor_faults.stats(), rm_faults.stats()

    logged = scalars(run_dir)
    assert [step for step, _ in logged["train/loss"]] == list(range(STEPS))
    assert all(torch.isfinite(torch.tensor([v for _, v in logged["train/loss"]])))
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == STEPS

    # the clients counted exactly the requests the servers left without a usable reply, by kind
    assert final(logged, "train/executor/requests") == executor_stats["requests"]
    assert final(logged, "train/executor/failed_requests") == executor_stats["exhausted_requests"]
    for kind, count in Counter(
        EXECUTOR_KIND[k] for k, n in executor_stats["exhausted"].items() for _ in range(n)
    ).items():
        assert final(logged, f"train/executor/failed_requests/{kind}") == count, kind
    rm_failed_items = sum(len(r["body"]["items"]) for r in rm_records if not r["usable"])
    assert final(logged, "train/rm/requests") == rm_stats["requests"]
    assert final(logged, "train/rm/failed_requests") == rm_stats["exhausted_requests"]
    assert final(logged, "train/rm/failed_items") == rm_failed_items
    for kind, count in Counter(
        RM_KIND[k] for k, n in rm_stats["exhausted"].items() for _ in range(n)
    ).items():
        assert final(logged, f"train/rm/failed_requests/{kind}") == count, kind

    # every sample that lost a reply is masked with its reason, and no other sample is
    expected = expected_masks(executor_records, rm_records, samples)
    assert logged_masks(run_dir) == expected
    for step, reasons in enumerate(expected):
        counts = Counter(reason for reason in reasons if reason)
        assert dict(logged["train/reward/masked"])[step] == sum(counts.values())
        for reason in ("executor_error", "baseline_executor_error", "rm_error"):
            tag = f"train/reward/masked/{reason}"
            assert dict(logged.get(tag, [])).get(step, 0.0) == counts[reason], (step, reason)

    masked = Counter(reason for reasons in expected for reason in reasons if reason)
    print(
        f"\nexecutor: {executor_stats['requests']} requests, {executor_stats['attempts']} attempts, "
        f"injected {executor_stats['injected']}, exhausted {executor_stats['exhausted']}"
        f"\nrm: {rm_stats['requests']} requests, {rm_stats['attempts']} attempts, injected {rm_stats['injected']}, "
        f"exhausted {rm_stats['exhausted']} ({rm_failed_items} items)"
        f"\nmasked samples: {dict(masked)} of {STEPS * samples}"
    )
    assert executor_stats["exhausted_requests"] > 0 and rm_stats["exhausted_requests"] > 0
    assert sum(masked.values()) > 0
