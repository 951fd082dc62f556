"""VLLMExecutor's failure plumbing with a scripted stand-in for `vllm.LLM` (fast tier, no vLLM needed):
engine errors are retried for the prompts they touch, then masked and counted; `generate` never raises.
The real engine runs in the `vllm` tier (test_vllm_tier.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from planlift.executors import vllm as vllm_module
from planlift.generation import encode_prompt
from planlift.models import build_char_tokenizer
from planlift.tasks.base import ChatPrompt

PROMPTS = [ChatPrompt(user=f"S1={i} S1?\n", prefill="answer=", stop=("\n",)) for i in range(3)]
FAULTS = {  # what the engine does wrong -> the kind the executor counts
    "raise": "engine_error",
    "fewer_outputs": "output_count",
    "short": "short_reply",
    "no_text": "no_text",
    "abort": "aborted",
}


class ScriptedLLM:
    """Answers completion j of prompt i with "ij\\n...". Call k does `faults[k]` wrong (None: nothing) to
    the first prompt of the call and to prompt 1; `calls` records how many prompts each call got. Prompts
    arrive as token ids (character tokenizer), as the real engine gets them."""

    tokenizer = build_char_tokenizer()

    def __init__(self, faults: list[str | None], refused: frozenset[str] = frozenset()) -> None:
        self.faults = list(faults)
        self.refused = refused  # prompt indices the engine refuses in every call (too long for its context)
        self.calls: list[int] = []

    def generate(self, prompts, params, use_tqdm=False):
        fault = self.faults.pop(0) if self.faults else None
        self.calls.append(len(prompts))
        if fault == "raise":
            raise RuntimeError("EngineDeadError: the engine core died")
        texts = [self.tokenizer.decode(prompt["prompt_token_ids"]) for prompt in prompts]
        if any(text.split("S1=")[1].split(" ")[0] in self.refused for text in texts):
            raise ValueError(
                "The decoder prompt (length 9000) is longer than the maximum model length of 8192"
            )
        outputs = []
        for i, (prompt, param) in enumerate(zip(prompts, params, strict=True)):
            text = self.tokenizer.decode(prompt["prompt_token_ids"])
            index = text.split("S1=")[1].split(" ")[0]
            completions = [
                SimpleNamespace(text=f"{index}{j}\nrest", finish_reason="stop") for j in range(param.n)
            ]
            if i == 0 or index == "1":
                if fault == "short":
                    completions = completions[:-1]
                elif fault == "no_text":
                    completions[0].text = None
                elif fault == "abort":
                    completions[-1].finish_reason = "abort"
            outputs.append(SimpleNamespace(outputs=completions))
        return outputs[:-1] if fault == "fewer_outputs" else outputs


@pytest.fixture
def make(monkeypatch, tiny_checkpoint):
    """make(faults, max_retries) -> (a VLLMExecutor whose engine is a ScriptedLLM, that engine)."""

    def build(faults, max_retries=1, checkpoint=tiny_checkpoint, refused=frozenset(), **kwargs):
        engine = ScriptedLLM(faults, refused)
        fake = SimpleNamespace(
            LLM=lambda **_: engine, SamplingParams=lambda **kwargs: SimpleNamespace(**kwargs)
        )
        monkeypatch.setattr(vllm_module, "import_vllm", lambda: fake)
        return vllm_module.VLLMExecutor(str(checkpoint), max_retries=max_retries, **kwargs), engine

    return build


@pytest.mark.parametrize("fault", FAULTS)
def test_an_engine_fault_is_retried_for_the_prompts_it_touched(make, fault):
    executor, engine = make([fault])
    results = executor.generate(PROMPTS, n=2)
    assert [r.texts for r in results] == [("00", "01"), ("10", "11"), ("20", "21")]
    metrics = executor.metrics()
    assert metrics[f"failed_attempts/{FAULTS[fault]}"] > 0 and metrics["failed_prompts"] == 0
    if fault in ("raise", "fewer_outputs"):  # the whole call failed: every prompt again
        assert engine.calls == [3, 3]
    else:  # only the prompts whose outputs were bad (0 and 1)
        assert engine.calls == [3, 2]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_persistent_engine_fault_is_masked_and_counted_never_raised(make, fault):
    executor, engine = make([fault] * 3, max_retries=2)
    results = executor.generate(PROMPTS, n=2)
    failed = [i for i, r in enumerate(results) if not r.ok]
    assert failed == ([0, 1, 2] if fault in ("raise", "fewer_outputs") else [0, 1])
    assert all(results[i].error.startswith(FAULTS[fault]) for i in failed)
    assert all(r.texts == (f"{i}0", f"{i}1") for i, r in enumerate(results) if r.ok)
    metrics = executor.metrics()
    assert metrics[f"failed_prompts/{FAULTS[fault]}"] == len(failed) == metrics["failed_prompts"]
    assert len(engine.calls) == 3


def test_a_refused_prompt_fails_alone_and_is_not_retried(make):
    """The engine refuses a whole call for one request in it (vLLM validates each request and raises): the
    call is split in halves down to that prompt; the others are answered, the refused one is masked once."""
    prompts = [ChatPrompt(user=f"S1={i} S1?\n", prefill="answer=", stop=("\n",)) for i in range(8)]
    executor, engine = make([], max_retries=2, refused=frozenset({"5"}))
    results = executor.generate(prompts, n=2)
    assert [r.ok for r in results] == [i != 5 for i in range(8)]
    assert all(r.texts == (f"{i}0", f"{i}1") for i, r in enumerate(results) if r.ok)
    assert results[5].error.startswith("refused: ValueError: The decoder prompt")
    assert engine.calls == [8, 4, 4, 2, 1, 1, 2]  # depth first; no retry: the engine would refuse it again
    metrics = executor.metrics()
    assert metrics["failed_prompts/refused"] == 1 == metrics["failed_prompts"]
    assert metrics["failed_attempts/refused"] == 1 and metrics["retried_prompts"] == 0


def test_a_dead_engine_is_not_split(make):
    executor, engine = make(["raise"] * 2, max_retries=1)
    results = executor.generate(PROMPTS, n=2)
    assert not any(r.ok for r in results) and engine.calls == [3, 3]


def test_greedy_asks_one_completion_and_repeats_it(make):
    executor, _ = make([])
    results = executor.generate(PROMPTS[:1], n=3, greedy=True)
    assert results[0].texts == ("00", "00", "00")


def test_requests_carry_their_own_seeds_and_a_resumed_executor_continues_them(make):
    """The engine's generator restarts with a resumed run; per-request seeds from a resumed counter do not.
    No two replies share a seed (vLLM seeds reply j with seed + j); greedy requests carry none. Without
    CUDA they are off by default (vLLM's CPU build fails them), so the test turns them on."""
    executor, engine = make([], request_seeds=True)
    seeds = []
    engine.generate = lambda prompts, params, use_tqdm=False: (
        seeds.append([p.seed for p in params]) or ScriptedLLM([]).generate(prompts, params)
    )
    executor.generate(PROMPTS, n=2)
    state = executor.state_dict()
    executor.generate(PROMPTS, n=2)
    executor.generate(PROMPTS, n=2, greedy=True)
    base = executor.seed * 1_000_003
    assert seeds[:2] == [[base + 0, base + 2, base + 4], [base + 6, base + 8, base + 10]]
    assert seeds[2] == [None, None, None]
    resumed, resumed_engine = make([], request_seeds=True)
    resumed.load_state_dict(state)
    again = []
    resumed_engine.generate = lambda prompts, params, use_tqdm=False: (
        again.append([p.seed for p in params]) or ScriptedLLM([]).generate(prompts, params)
    )
    resumed.generate(PROMPTS, n=2)
    assert again == [seeds[1]]


def test_without_cuda_requests_carry_no_seed_by_default(make):
    executor, engine = make([])
    seen = []
    engine.generate = lambda prompts, params, use_tqdm=False: (
        seen.append([p.seed for p in params]) or ScriptedLLM([]).generate(prompts, params)
    )
    executor.generate(PROMPTS, n=2)
    assert executor.request_seeds is False and seen == [[None, None, None]]


def test_the_engine_gets_token_ids_with_the_chat_templates_bos_only(make, bos_checkpoint):
    """A tokenizer that adds BOS would put a second one before the chat template's if the engine tokenized
    the text; the executor sends the ids that HF generation runs (one BOS)."""
    executor, engine = make([], checkpoint=bos_checkpoint)
    sent = []
    engine.generate = lambda prompts, params, use_tqdm=False: (
        sent.extend(prompts) or ScriptedLLM([]).generate(prompts, params)
    )
    assert executor.generate(PROMPTS, n=2)[0].texts == ("00", "01")
    tokenizer = executor.tokenizer
    bos = tokenizer.bos_token_id
    assert tokenizer("S1=0")["input_ids"][0] == bos  # the tokenizer adds BOS to text
    for prompt, request in zip(PROMPTS, sent, strict=True):
        ids = request["prompt_token_ids"]
        assert ids == encode_prompt(tokenizer, executor.render(prompt))
        assert ids[0] == bos and ids.count(bos) == 1
