import pytest
import torch

from planlift.errors import ConfigError
from planlift.executors import HFExecutor
from planlift.tasks.base import ChatPrompt

PROMPTS = [
    ChatPrompt(user="S1=3 S2=7 S3=S1+S2 S3?\n", prefill="answer="),
    ChatPrompt(user="S1=1\n", prefill="answer="),
    ChatPrompt(
        user="S1=3 S2=7 S3=S1+S2 S4=S3-S1 S5=S4+S4 S5?\n<reasoning>\nS3=3+7=0\n</reasoning>\n", prefill="x"
    ),
    ChatPrompt(user="", prefill="answer="),
]


@pytest.fixture(scope="module")
def executor(tiny_checkpoint):
    return HFExecutor(str(tiny_checkpoint), max_new_tokens=12, device="cpu")


def test_greedy_batched_equals_one_by_one(executor):
    batched = executor.generate(PROMPTS, n=1, greedy=True)
    single = [executor.generate([p], n=1, greedy=True)[0] for p in PROMPTS]
    assert [r.texts for r in batched] == [r.texts for r in single]
    assert all(len(r.texts[0]) > 0 for r in batched)


def test_n_samples_per_prompt_in_one_call(executor):
    calls = executor.stats.calls
    results = executor.generate(PROMPTS[:3], n=4)
    assert executor.stats.calls == calls + 1
    assert [len(r.texts) for r in results] == [4, 4, 4]
    assert executor.stats.last_call_generations == 12


def test_stop_strings_cut_the_text(tiny_checkpoint):
    executor = HFExecutor(str(tiny_checkpoint), max_new_tokens=12, device="cpu")
    free = executor.generate([PROMPTS[0]], n=1, greedy=True)[0].texts[0]
    stop = free[3]  # a character the greedy continuation is known to produce
    cut = executor.generate([ChatPrompt(PROMPTS[0].user, prefill="answer=", stop=(stop,))], 1, greedy=True)
    assert cut[0].texts[0] == free[: free.index(stop)]


def test_executor_is_frozen(executor):
    assert not executor.model.training
    assert not any(p.requires_grad for p in executor.model.parameters())


def test_backend_failure_is_reported_per_prompt_not_raised(executor, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(executor.model, "generate", boom)
    failed = executor.stats.failed_prompts
    results = executor.generate(PROMPTS[:2], n=2)
    assert [r.ok for r in results] == [False, False]
    assert "out of memory" in results[0].error
    assert executor.stats.failed_prompts == failed + 2


def test_a_batch_that_fails_is_split_until_only_the_failing_prompt_is_masked(executor, monkeypatch):
    """The real model, refusing batches of more than two prompts (out of memory) and any batch holding the
    longest prompt: the others get their one-by-one greedy texts, the longest alone fails."""
    real = executor.model.generate
    lengths = [
        len(executor.tokenizer(executor.render(p), add_special_tokens=False)["input_ids"]) for p in PROMPTS
    ]
    assert max(lengths) == lengths[2] > sorted(lengths)[-2]
    longest = lengths[2]
    calls = []

    def limited(*args, **kwargs):
        mask = kwargs["attention_mask"]
        calls.append(mask.shape[0])
        if mask.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        if int(mask.sum(dim=1).max()) >= longest:
            raise ValueError("input longer than the model's context")
        return real(*args, **kwargs)

    single = [executor.generate([p], n=1, greedy=True)[0] for p in PROMPTS]
    monkeypatch.setattr(executor.model, "generate", limited)
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    calls.clear()
    failed = executor.stats.failed_prompts
    results = executor.generate(PROMPTS, n=1, greedy=True)
    assert [r.ok for r in results] == [True, True, False, True]  # PROMPTS[2] is the longest
    assert "longer than the model's context" in results[2].error
    assert [r.texts for r in results if r.ok] == [single[i].texts for i in (0, 1, 3)]
    assert calls == [4, 2, 2, 1, 1]  # the batch, its halves, the failing half's halves
    assert emptied == [True]  # the allocator's cache freed after the out-of-memory batch
    assert executor.stats.failed_prompts == failed + 1


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"temperature": -1}, "temperature"), ({"max_new_tokens": 0}, "max_new_tokens")]
)
def test_invalid_sampling_config(tiny_checkpoint, kwargs, key):
    with pytest.raises(ConfigError, match=f"executor.{key}"):
        HFExecutor(str(tiny_checkpoint), **kwargs)


def test_zero_temperature_repeats_the_greedy_text_n_times(tiny_checkpoint):
    executor = HFExecutor(str(tiny_checkpoint), temperature=0.0, max_new_tokens=6, device="cpu")
    results = executor.generate(PROMPTS[:2], n=3)
    assert all(len(r.texts) == 3 and len(set(r.texts)) == 1 for r in results)
    assert [r.texts[0] for r in results] == [
        r.texts[0] for r in executor.generate(PROMPTS[:2], 1, greedy=True)
    ]


def test_identity_names_every_setting_that_changes_a_reply(tiny_checkpoint):
    """The identity keys the baseline cache: prompt rendering and precision are in it (a cache written with
    the chat template on must not answer for one with it off)."""
    identities = {
        HFExecutor(str(tiny_checkpoint), device="cpu", **kwargs).identity
        for kwargs in ({}, {"use_chat_template": False}, {"dtype": "bfloat16"}, {"temperature": 0.7})
    }
    assert len(identities) == 4
