"""Plumbing of `rollout=vllm_server` without vLLM: how completions become a rollout batch, how the client
treats a failing or wrong server (a stdlib HTTP double on 127.0.0.1), and the server's launch command. The
real server is tested in tests/executors/test_vllm_rollouts.py (vllm tier)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from planlift.errors import ConfigError
from planlift.generation import encode_prompt
from planlift.grpo.engines import Sampled, request_seed, to_generation
from planlift.grpo.vllm_server import ServerError, VLLMServerEngine
from planlift.models import load_policy


class Tokenizer:
    pad_token_id = 0
    eos_token_id = 2


def test_completions_become_padded_rows_with_their_logprobs():
    samples = [Sampled([5, 6, 7], [-0.1, -0.2, -0.3], "abc<"), Sampled([8], [-0.4], "d")]
    generation = to_generation(Tokenizer(), [[1, 2], [3]], samples, stop=["<"], n=1, greedy=False)
    assert generation.prompt_ids.tolist() == [[1, 2], [0, 3]]  # left-padded
    assert generation.prompt_mask.tolist() == [[1, 1], [0, 1]]
    assert generation.completion_ids.tolist() == [[5, 6, 7], [8, 0, 0]]  # right-padded
    assert generation.completion_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    torch.testing.assert_close(generation.logprobs, torch.tensor([[-0.1, -0.2, -0.3], [-0.4, 0, 0]]))
    assert generation.texts == ["abc", "d"]


def test_a_greedy_completion_is_repeated_n_times_and_a_short_reply_is_an_error():
    samples = [Sampled([5], [-0.1], "a"), Sampled([6], [-0.2], "b")]
    generation = to_generation(Tokenizer(), [[1], [2]], samples, stop=[], n=3, greedy=True)
    assert generation.texts == ["a", "a", "a", "b", "b", "b"]
    assert generation.prompt_ids.flatten().tolist() == [1, 1, 1, 2, 2, 2]
    with pytest.raises(RuntimeError, match="1 completions for 2 prompts x n=1"):
        to_generation(Tokenizer(), [[1], [2]], samples[:1], stop=[], n=3, greedy=True)
    with pytest.raises(RuntimeError, match="no log-prob"):
        to_generation(Tokenizer(), [[1]], [Sampled([5, 6], [-0.1], "a")], stop=[], n=1, greedy=False)


class Double:
    """A server that answers from a script: each path maps to a list of (status, body) replies."""

    def __init__(self, script: dict[str, list[tuple[int, dict]]]) -> None:
        self.script = script
        self.seen: list[tuple[str, dict | None]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                path = self.path.split("?")[0]
                double.seen.append((path, body))
                replies = double.script.get(path) or [(404, {"error": "not found"})]
                status, payload = replies.pop(0) if len(replies) > 1 else replies[0]
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _reply

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def double():
    started = []

    def start(script):
        started.append(Double(script))
        return started[-1]

    yield start
    for server in started:
        server.close()


MODELS = (200, {"data": [{"id": "planner"}]})
INFO = (200, {"vllm_config": {"model_config": {"dtype": "float32", "logprobs_mode": "processed_logprobs"}}})


def choice(index, tokens, text):
    return {
        "index": index,
        "text": text,
        "token_ids": tokens,
        "logprobs": {"token_logprobs": [-0.5] * len(tokens)},
    }


def test_the_client_retries_server_errors_and_samples_each_prompt_with_its_request_seed(
    tiny_checkpoint, double
):
    policy = load_policy(str(tiny_checkpoint))
    reply = (200, {"choices": [choice(1, [7], "y"), choice(0, [5, 6], "x")]})
    server = double({"/v1/models": [MODELS], "/server_info": [INFO], "/v1/completions": [(503, {}), reply]})
    engine = VLLMServerEngine(server.url, retries=2)
    engine._backoff = lambda attempt: 0.0
    generation = engine.sample(
        policy, ["a b", "c"], 2, greedy=False, temperature=0.7, top_p=1.0, max_new_tokens=4, stop=[], seed=10
    )
    assert generation.texts == ["x", "y", "x", "y"]  # choices ordered by index
    requests = [body for path, body in server.seen if path == "/v1/completions"]
    assert len(requests) == 3 and engine.retried == 1  # the 503 was sent again
    ids = [encode_prompt(policy.tokenizer, text) for text in ["a b", "c"]]
    expected = {tuple(ids[i]): request_seed(10, i, ids[i], 2) for i in range(2)}
    assert {tuple(r["prompt"]): r["seed"] for r in requests} == expected  # the retry kept its seed
    assert all(r["n"] == 2 and r["logprobs"] == 0 and r["return_token_ids"] for r in requests)
    assert all(isinstance(r["prompt"], list) for r in requests)  # token ids, not text


def test_request_seeds_give_no_two_replies_one_stream():
    """vLLM samples reply j of a request with seed + j: across ranks (step seeds one apart), prompts, steps
    and validation batches (same seed, other prompts) no two replies share a stream."""
    prompts = [[5, i, 7] for i in range(64)]
    n = 16
    streams = [
        request_seed(seed, i, prompt, n) + j
        for seed in (100, 101, 102, 100 + 7919)  # three ranks' step seeds, and the next step's
        for i, prompt in enumerate(prompts)
        for j in range(n)
    ]
    streams += [
        request_seed(100, i, [6, *prompt], n) + j for i, prompt in enumerate(prompts) for j in range(n)
    ]
    assert len(set(streams)) == len(streams) and max(streams) < 2**31
    assert request_seed(100, 3, prompts[3], n) == request_seed(
        100, 3, prompts[3], n
    )  # a resumed run repeats it


def test_a_wrong_or_missing_server_is_a_clear_error(tiny_checkpoint, double):
    policy = load_policy(str(tiny_checkpoint))
    with pytest.raises(ServerError, match=r"(?s)127\.0\.0\.1:9/v1/models failed.*--rollouts"):
        VLLMServerEngine("http://127.0.0.1:9", retries=0).load_weights(policy)
    executor_server = double({"/v1/models": [(200, {"data": [{"id": "executor"}]})]})
    with pytest.raises(ConfigError, match="serves \\['executor'\\], not 'planner'"):
        VLLMServerEngine(executor_server.url).load_weights(policy)
    raw = (200, {"vllm_config": {"model_config": {"dtype": "float32", "logprobs_mode": "raw_logprobs"}}})
    raw_server = double({"/v1/models": [MODELS], "/server_info": [raw]})
    with pytest.raises(ConfigError, match="processed_logprobs"):
        VLLMServerEngine(raw_server.url).load_weights(policy)
    refusing = double({"/v1/models": [MODELS], "/server_info": [INFO], "/collective_rpc": [(400, {"e": 1})]})
    engine = VLLMServerEngine(refusing.url, retries=3)
    with pytest.raises(ServerError, match="collective_rpc failed: HTTP 400"):
        engine.load_weights(policy)
    assert engine.retried == 0  # a 4xx is not retried
    with pytest.raises(ConfigError, match="base_url"):
        VLLMServerEngine("127.0.0.1:8001")


def test_the_rollout_server_command_adds_the_extension_logprobs_mode_and_cpu_dtype(tiny_checkpoint):
    from planlift.executors.serve import server_command

    command = server_command(str(tiny_checkpoint), "127.0.0.1", 8001, [], rollouts=True)
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert flags["--served-model-name"] == "planner"
    assert flags["--worker-extension-cls"] == "planlift.grpo.vllm_worker.WeightLoader"
    assert flags["--logprobs-mode"] == "processed_logprobs"
    assert flags["--generation-config"] == "vllm"
    assert command[command.index("--dtype") + 1] == "float32"  # no CUDA here
    given = server_command(str(tiny_checkpoint), "127.0.0.1", 8001, ["--dtype", "bfloat16"], rollouts=True)
    assert given.count("--dtype") == 1
    executor = server_command(str(tiny_checkpoint), "127.0.0.1", 8000, [])
    assert "--worker-extension-cls" not in executor
    # the executor server samples with vLLM's defaults too, not the checkpoint's generation_config.json
    assert executor[executor.index("--generation-config") + 1] == "vllm"
    own = server_command(str(tiny_checkpoint), "127.0.0.1", 8000, ["--generation-config", "auto"])
    assert own.count("--generation-config") == 1 and own[own.index("--generation-config") + 1] == "auto"
