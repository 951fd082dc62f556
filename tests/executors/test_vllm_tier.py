"""The `vllm` tier: the real vLLM offline engine and OpenAI server on the debug bootstrap's tiny executor.

Each engine starts once per session (tests/executors/conftest.py). Run with `make test-vllm`.
"""

from __future__ import annotations

import json
import math
import urllib.request

import pytest

from planlift.executors import HFExecutor, OpenAIExecutor
from planlift.generation import encode_prompt
from planlift.tasks.base import ChatPrompt
from tests.executors.conftest import DEBUG_OVERRIDES

pytestmark = pytest.mark.vllm


def problems_and_prompts(task, count=8):
    problems = list(task.problems("validation"))[:count]
    gold = [task.executor_prompt(p, task.gold_reasoning(p)) for p in problems]
    alone = [task.executor_prompt(p, None) for p in problems]
    return problems, gold, alone


def accuracy(task, problems, results) -> float:
    return sum(task.verify(p, r.texts[0]).correct for p, r in zip(problems, results, strict=True)) / len(
        problems
    )


def scalars(run_dir):
    from tbparse import SummaryReader

    frame = SummaryReader(str(run_dir / "tensorboard")).scalars
    return {tag: list(zip(group.step, group.value, strict=True)) for tag, group in frame.groupby("tag")}


def train_steps(tmp_path, *overrides, executor=None, engine=None):
    """A few grounded GRPO steps in process (src/train.py's `train`) with the debug preset."""
    from tests.test_configs import compose_with, load_entry_point

    train = load_entry_point().train

    run_dir = tmp_path / "run"
    cfg = compose_with([*DEBUG_OVERRIDES, "reward=grounded", "trainer.max_steps=3", *overrides], run_dir)
    train(cfg, executor=executor, engine=engine)
    return scalars(run_dir)


def check_grounded_run(logged) -> None:
    assert [step for step, _ in logged["train/loss"]] == [0, 1, 2]
    assert all(math.isfinite(v) for _, v in logged["train/loss"])
    for tag in (
        "train/reward/w",
        "train/reward/b",
        "train/reward/uplift",
        "val/e2e_acc",
        "final/val/e2e_acc",
    ):
        assert tag in logged, tag
    assert logged["train/baseline_cache_size"][-1][1] > 0


# ---- offline engine ---------------------------------------------------------------------------------


def test_offline_engine_samples_n_per_prompt_with_stops(vllm_executor, debug_bootstrap):
    task, _ = debug_bootstrap
    _, gold, alone = problems_and_prompts(task)
    calls = vllm_executor.stats.calls
    results = vllm_executor.generate(gold + alone, n=4)
    assert vllm_executor.stats.calls == calls + 1
    assert [len(r.texts) for r in results] == [4] * 16 and all(r.ok for r in results)
    assert not any("\n" in text for r in results for text in r.texts)  # the executor prompt stops at \n
    greedy = vllm_executor.generate(gold, n=3, greedy=True)
    assert all(len(set(r.texts)) == 1 and len(r.texts) == 3 for r in greedy)


def test_offline_engine_reads_the_character_tokenizer_like_hf(vllm_executor, debug_bootstrap, monkeypatch):
    """The engine runs the prompt ids that HF generation runs, and greedy answers match the in-process HF
    executor (a broken tokenizer would drop spaces)."""
    task, bootstrap = debug_bootstrap
    problems, gold, alone = problems_and_prompts(task, 16)
    hf = HFExecutor(str(bootstrap.ensure().checkpoint("executor")), max_new_tokens=8, device="cpu")
    ran = []
    engine_generate = vllm_executor.llm.generate

    def recorded(*args, **kwargs):
        outputs = engine_generate(*args, **kwargs)
        ran.extend(list(output.prompt_token_ids) for output in outputs)
        return outputs

    monkeypatch.setattr(vllm_executor.llm, "generate", recorded)
    for prompts in (gold, alone):
        ran.clear()
        ours = vllm_executor.generate(prompts, 1, greedy=True)
        assert ran == [encode_prompt(hf.tokenizer, hf.render(p)) for p in prompts]
        theirs = hf.generate(prompts, 1, greedy=True)
        same = sum(a.texts == b.texts for a, b in zip(ours, theirs, strict=True))
        assert same >= 0.8 * len(prompts), (same, [r.texts for r in ours], [r.texts for r in theirs])
    assert accuracy(task, problems, vllm_executor.generate(gold, 1, greedy=True)) == pytest.approx(
        accuracy(task, problems, hf.generate(gold, 1, greedy=True)), abs=0.15
    )


def test_a_prompt_longer_than_the_engines_context_fails_alone(vllm_executor, debug_bootstrap, monkeypatch):
    """A reasoning that makes its executor prompt longer than max_model_len: the engine refuses the call it
    is in; the executor splits the call, answers the others as it answers them alone and masks that one."""
    task, _ = debug_bootstrap
    problems, gold, _ = problems_and_prompts(task, 4)
    context = vllm_executor.llm.llm_engine.model_config.max_model_len
    too_long = task.executor_prompt(problems[1], "S1 " * context)
    assert len(encode_prompt(vllm_executor.tokenizer, vllm_executor.render(too_long))) > context
    alone = vllm_executor.generate([gold[0], gold[2], gold[3]], n=2, greedy=True)
    failed, calls = vllm_executor.metrics().get("failed_prompts/refused", 0), []
    engine_generate = vllm_executor.llm.generate

    def recorded(inputs, *args, **kwargs):
        calls.append(len(inputs))
        return engine_generate(inputs, *args, **kwargs)

    monkeypatch.setattr(vllm_executor.llm, "generate", recorded)
    results = vllm_executor.generate([gold[0], too_long, gold[2], gold[3]], n=2, greedy=True)
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].error.startswith("refused: ") and str(context) in results[1].error
    assert [r.texts for r in results if r.ok] == [r.texts for r in alone]
    assert calls == [4, 2, 1, 1, 2]
    assert vllm_executor.metrics()["failed_prompts/refused"] == failed + 1


def test_grounded_grpo_steps_with_the_offline_engine(vllm_executor, tmp_path):
    logged = train_steps(tmp_path, "executor=vllm", executor=vllm_executor)
    check_grounded_run(logged)
    assert logged["train/executor/calls"][-1][1] > 0


# ---- OpenAI server ----------------------------------------------------------------------------------


def openai_executor(base_url, **kwargs) -> OpenAIExecutor:
    # no per-request seeds: vLLM's CPU build crashes on them ("CPU Generator does not use offset")
    settings = {"temperature": 0.5, "max_new_tokens": 8, "timeout_s": 30.0, **kwargs}
    return OpenAIExecutor(base_url, "executor", **settings)


@pytest.mark.parametrize(
    ("api", "tokenizer"), [("completions", None), ("completions", "executor"), ("chat", None)]
)
def test_openai_server_n_samples_and_greedy_match_the_offline_engine(
    openai_server, vllm_executor, debug_bootstrap, api, tokenizer
):
    """With a tokenizer, completion prompts travel as token ids."""
    task, bootstrap = debug_bootstrap
    _, gold, alone = problems_and_prompts(task)
    if tokenizer is not None:
        tokenizer = str(bootstrap.ensure().checkpoint(tokenizer))
    executor = openai_executor(openai_server, api=api, max_concurrency=4, tokenizer=tokenizer)
    results = executor.generate(gold + alone, n=3)
    assert all(r.ok and len(r.texts) == 3 for r in results)
    assert executor.n_supported is True and executor.requests_sent == 16  # one request per prompt
    assert not any("\n" in text for r in results for text in r.texts)
    served = executor.generate(gold, 1, greedy=True)
    offline = vllm_executor.generate(gold, 1, greedy=True)
    same = sum(a.texts == b.texts for a, b in zip(served, offline, strict=True))
    assert same >= 0.8 * len(gold)


def test_server_that_ignores_n_is_detected_and_fanned_out(fault_proxy, debug_bootstrap):
    task, _ = debug_bootstrap
    _, gold, _ = problems_and_prompts(task, 4)
    executor = openai_executor(fault_proxy(fail_rate=0.0, ignore_n=True))
    results = executor.generate(gold, n=3)
    assert all(r.ok and len(r.texts) == 3 for r in results)
    assert executor.n_supported is False and executor.n_fallback_requests == 4 * 2
    executor.generate(gold, n=3)  # from now on: n single-sample requests per prompt
    assert executor.requests_sent == 4 + 8 + 12


def test_grounded_grpo_steps_with_the_openai_server(openai_server, debug_bootstrap, tmp_path):
    logged = train_steps(tmp_path, "executor=openai", f"executor.base_url={openai_server}")
    check_grounded_run(logged)
    assert logged["train/executor/requests"][-1][1] > 0
    assert logged["train/executor/failed_requests"][-1][1] == 0


def test_fault_injection_masks_and_counts_failed_samples(fault_proxy, debug_bootstrap, tmp_path):
    """30% of requests get a fault of every kind (tests/faults/server.py): the run completes, every request
    the executor counts as failed is one the proxy left without a usable reply, and the failed samples are
    masked and counted."""
    proxy = fault_proxy(fail_rate=0.3, hang_s=3.0, seed=1)
    logged = train_steps(
        tmp_path,
        "executor=openai",
        f"executor.base_url={proxy}",
        "executor.max_retries=0",  # every injected fault that is not usable reaches the reward
        "executor.timeout_s=1.0",
        "executor.breaker_threshold=1000",
        "executor.max_concurrency=8",
    )
    with urllib.request.urlopen(proxy.removesuffix("/v1") + "/faults/stats") as response:
        stats = json.loads(response.read())
    assert sum(stats["injected"].values()) > 0
    # validation runs after the last logged step, so the logged count is a lower bound
    assert 0 < logged["train/executor/failed_requests"][-1][1] <= stats["exhausted_requests"]
    masked = sum(v for _, v in logged["train/reward/masked/executor_error"])
    assert masked > 0 and sum(v for _, v in logged["train/reward/masked"]) >= masked
    assert all(math.isfinite(v) for _, v in logged["train/loss"])
    assert logged["train/executor/prompt_failure_rate"][-1][1] > 0


def test_retries_recover_from_injected_faults(fault_proxy, debug_bootstrap):
    task, _ = debug_bootstrap
    _, gold, alone = problems_and_prompts(task, 16)
    executor = openai_executor(
        fault_proxy(fail_rate=0.3, hang_s=3.0, seed=2), max_retries=4, timeout_s=1.0, backoff_s=0.05
    )
    results = executor.generate(gold + alone, n=2)
    assert executor.retries > 0
    assert sum(r.ok for r in results) >= 30  # 0.3^5 per request: all but a rare one recover
    assert all(len(r.texts) == 2 for r in results if r.ok)


def test_chat_prefill_is_continued(openai_server):
    executor = openai_executor(openai_server, api="chat")
    prompt = ChatPrompt(user="S1=3 S2=4 S3=S1+S2 S3?\n", prefill="answer=", stop=("\n",))
    completion = openai_executor(openai_server, api="completions").generate([prompt], 1, greedy=True)
    chat = executor.generate([prompt], 1, greedy=True)
    assert chat[0].texts == completion[0].texts  # the plain template renders the same prompt text
