"""OpenAIExecutor plumbing against a scripted local HTTP server (retries, breaker, n fallback, bodies).

The real server (vLLM) and the fault-injection run are in the `vllm` tier (test_vllm_tier.py).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from planlift.errors import ConfigError
from planlift.executors import OpenAIExecutor
from planlift.tasks.base import ChatPrompt

PROMPT = ChatPrompt(user="S1=3 S2=4 S3=S1+S2 S3?\n", system="sys", prefill="answer=", stop=("\n",))


class Scripted:
    """Replies in order from `script` (then `default`): an int status, "choices:k", or "garbage"."""

    def __init__(self, script=(), default="choices:n") -> None:
        self.script = list(script)
        self.default = default
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def next(self, body: dict):
        with self.lock:
            self.bodies.append(body)
            return self.script.pop(0) if self.script else self.default


@pytest.fixture
def server():
    scripted = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            action = scripted.next(body)
            if isinstance(action, int):
                payload, code = b'{"error": "scripted"}', action
            elif action == "garbage":
                payload, code = b'{"choices": [{"te', 200
            elif action == "notext":
                payload, code = b'{"choices": [{"text": null, "message": {"content": null}}]}', 200
            elif action == "error200":
                payload, code = b'{"error": {"message": "engine overloaded"}}', 200
            else:
                count = body["n"] if action == "choices:n" else int(action.split(":")[1])
                key = "message" if self.path.endswith("chat/completions") else "text"
                choices = [
                    {key: {"role": "assistant", "content": f"{i}\nmore"}}
                    if key == "message"
                    else {key: f"{i}\nx"}
                    for i in range(count)
                ]
                payload, code = json.dumps({"choices": choices}).encode(), 200
            self.send_response(code)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    scripted.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield scripted
    httpd.shutdown()
    httpd.server_close()


def make(server, **kwargs) -> OpenAIExecutor:
    return OpenAIExecutor(server.url, "executor", backoff_s=0.0, timeout_s=5.0, **kwargs)


def test_completions_body_renders_prefill_and_stop_and_cuts_text(server):
    executor = make(server, seed=7)
    results = executor.generate([PROMPT, PROMPT], n=3)
    assert [r.texts for r in results] == [("0", "1", "2")] * 2  # cut at the stop string
    body = server.bodies[0]
    assert body["prompt"] == "sys\nS1=3 S2=4 S3=S1+S2 S3?\nanswer=" and body["stop"] == ["\n"]
    assert body["n"] == 3 and body["model"] == "executor" and body["max_tokens"] == 16
    # vLLM seeds reply j with seed + j: the second request starts after the first one's 3 replies
    assert sorted(b["seed"] for b in server.bodies) == [7 * 1_000_003 + 1, 7 * 1_000_003 + 4]
    assert executor.n_supported is True


def test_chat_body_continues_the_prefill(server):
    make(server, api="chat").generate([PROMPT], n=2)
    body = server.bodies[0]
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": PROMPT.user},
        {"role": "assistant", "content": "answer="},
    ]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_greedy_sends_one_sample_and_repeats_it(server):
    results = make(server).generate([PROMPT], n=3, greedy=True)
    assert results[0].texts == ("0", "0", "0")
    assert server.bodies[0]["n"] == 1 and server.bodies[0]["temperature"] == 0.0


def test_retries_recover_from_500_and_malformed_json(server):
    server.script = [500, "garbage", 503]
    executor = make(server, max_retries=3)
    result = executor.generate([PROMPT], n=2)[0]
    assert result.ok and result.texts == ("0", "1")
    assert executor.retries == 3
    assert dict(executor.attempt_failures) == {"http_500": 1, "malformed": 1, "http_503": 1}
    assert executor.metrics()["failed_requests"] == 0.0


def test_exhausted_retries_and_4xx_fail_the_prompt_not_the_call(server):
    server.script = [500, 500, 400]
    executor = make(server, max_retries=1, max_concurrency=1)
    results = executor.generate([PROMPT, PROMPT], n=2)
    assert [r.ok for r in results] == [False, False]
    assert results[0].error.startswith("http_500") and results[1].error.startswith("http_400")
    assert len(server.bodies) == 3  # the 400 is not retried
    metrics = executor.metrics()
    assert metrics["failed_prompts"] == 2 and metrics["prompt_failure_rate"] == 1.0
    assert metrics["failed_requests"] == 2 and metrics["failed_attempts/http_500"] == 2


def test_circuit_breaker_opens_and_fails_fast(server):
    server.default = 500
    executor = make(server, max_retries=5, breaker_threshold=2, breaker_cooldown_s=60.0, max_concurrency=1)
    results = executor.generate([PROMPT] * 4, n=1)
    assert not any(r.ok for r in results)
    assert len(server.bodies) == 2  # everything after two failures is refused without a request
    assert executor.breaker.trips == 1 and executor.attempt_failures["circuit_open"] == 4


def test_breaker_lets_a_probe_through_after_the_cooldown(server):
    server.script = [500, 500]
    executor = make(server, max_retries=0, breaker_threshold=2, breaker_cooldown_s=0.0, max_concurrency=1)
    assert not any(r.ok for r in executor.generate([PROMPT] * 2, n=1))
    assert executor.generate([PROMPT], n=1)[0].ok  # the half-open probe succeeds and closes it
    assert executor.breaker.consecutive_failures == 0


def test_server_ignoring_n_is_detected_on_consistent_evidence_and_fanned_out(server, caplog):
    server.default = "choices:1"
    executor = make(server)
    results = executor.generate([PROMPT, PROMPT], n=3)
    assert all(r.ok and len(r.texts) == 3 for r in results)
    assert executor.n_fallback_requests == 4
    assert executor.n_supported is None  # two short replies are not yet evidence
    assert executor.generate([PROMPT], n=3)[0].ok  # the third one in a row is
    assert executor.n_supported is False
    assert "ignores n" in caplog.text
    executor.generate([PROMPT], n=3)
    assert [b["n"] for b in server.bodies[-3:]] == [1, 1, 1]


def test_one_transient_short_reply_changes_nothing_for_later_calls(server):
    server.script = ["choices:1"]  # then full replies
    executor = make(server)
    assert executor.generate([PROMPT], n=3)[0].ok
    assert executor.generate([PROMPT], n=3)[0].ok
    assert executor.n_supported is True
    assert server.bodies[-1]["n"] == 3


@pytest.mark.parametrize("fault", ["choices:0", "notext", "error200", "garbage"])
def test_bad_200_replies_are_retried_then_masked_never_raised(server, fault):
    server.script = [fault]
    executor = make(server, max_retries=1)
    assert executor.generate([PROMPT], n=1)[0].texts == ("0",)  # retried: the next reply is good
    server.script = [fault, fault]
    result = make(server, max_retries=1).generate([PROMPT], n=1)[0]
    assert not result.ok and result.error  # budget spent: masked, with its kind


def test_extra_choices_are_dropped(server):
    server.default = "choices:5"
    result = make(server).generate([PROMPT], n=2)[0]
    assert result.texts == ("0", "1")


def test_native_n_mode_reports_a_short_reply(server):
    server.default = "choices:1"
    result = make(server, n_mode="native").generate([PROMPT], n=2)[0]
    assert not result.ok and "short_reply" in result.error


def test_unreachable_server_is_a_connection_failure():
    executor = OpenAIExecutor("http://127.0.0.1:9/v1", "x", max_retries=1, backoff_s=0.0, timeout_s=2.0)
    result = executor.generate([PROMPT], n=1)[0]
    assert not result.ok and result.error.startswith("connection")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"api": "grpc"}, "executor.api"),
        ({"n_mode": "sometimes"}, "executor.n_mode"),
        ({"max_concurrency": 0}, "executor.max_concurrency"),
        ({"temperature": -1.0}, "executor.temperature"),
        ({"top_p": 0.0}, "executor.top_p"),
        ({"max_new_tokens": 0}, "executor.max_new_tokens"),
        ({"timeout_s": 0}, "executor.timeout_s"),
    ],
)
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        OpenAIExecutor("http://127.0.0.1:9/v1", "x", **kwargs)


def test_vllm_executor_without_vllm_is_a_clear_error(tiny_checkpoint):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here")
    from planlift.executors import VLLMExecutor

    with pytest.raises(ConfigError, match="needs vLLM"):
        VLLMExecutor(str(tiny_checkpoint))


def test_standalone_tokenizer_dir_keeps_the_character_tokenizer(tiny_checkpoint):
    """vLLM gets a tokenizer-only copy of character-tokenizer checkpoints (no config.json: AutoTokenizer
    then takes the declared class instead of rebuilding Qwen2's, which drops spaces)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from planlift.executors.vllm import standalone_tokenizer_dir

    directory = Path(standalone_tokenizer_dir(str(tiny_checkpoint)))
    assert not (directory / "config.json").exists() and (directory / "tokenizer.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    assert tokenizer.decode(tokenizer.encode("S1=3 S2=7", add_special_tokens=False)) == "S1=3 S2=7"


def test_identity_names_every_setting_that_changes_a_reply(tiny_checkpoint):
    """The prompt's tokenizer and chat setting, and extra_body (merged after the sampling fields, so it can
    override them), are in the identity that keys the baseline cache."""
    base = ("http://127.0.0.1:9/v1", "x")
    identities = {
        OpenAIExecutor(*base, **kwargs).identity
        for kwargs in (
            {},
            {"use_chat_template": False},
            {"tokenizer": str(tiny_checkpoint)},
            {"extra_body": {"top_k": 5}},
            {"extra_body": {"temperature": 1.0}},
        )
    }
    assert len(identities) == 5


def test_completions_with_a_tokenizer_send_the_ids_with_the_chat_templates_bos_only(server, bos_checkpoint):
    """A server tokenizing the rendered text adds its BOS before the template's; token ids are what HF
    generation runs. The identity says how the prompt travels (it keys cached baselines)."""
    from planlift.generation import encode_prompt, render_prompt

    executor = make(server, tokenizer=str(bos_checkpoint))
    assert executor.generate([PROMPT], n=2)[0].texts == ("0", "1")
    tokenizer = executor.tokenizer
    ids = server.bodies[0]["prompt"]
    assert ids == encode_prompt(tokenizer, render_prompt(tokenizer, PROMPT, None))
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids).endswith("assistant: answer=")
    assert executor.identity.endswith(":prompt=ids") and not make(server).identity.endswith(":prompt=ids")
