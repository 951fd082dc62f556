"""Planner rollouts from a separate vLLM server (`rollout=vllm_server`): the engine runs in its own process,
on its own GPUs, so generation and the update do not share memory (TRL's server mode).

Start the server on the planner's checkpoint (the base model for a LoRA planner):

    python -m planlift.executors.serve <checkpoint> --rollouts --port 8001 [-- <more vLLM flags>]

It is vLLM's OpenAI server with what the trainer needs: `planlift.grpo.vllm_worker` as worker extension,
the log-probs of the sampled distribution (`--logprobs-mode processed_logprobs`), the sampling the request
asks for and nothing from the checkpoint's generation config, and vLLM's development endpoints
(`/collective_rpc`, `/reset_prefix_cache`; keep the port on a trusted network).

Weight sync after every optimizer step: rank 0 writes the planner's weights (merged base + delta for a LoRA
planner; gathered under FSDP) to a safetensors file in `weights_dir`, which the server must see (the same
node, or a shared filesystem), and asks the server to load it through the worker extension; the other ranks
wait at a barrier. Every rank then samples its own prompts from the server. Rollouts go in as token ids, one
request per prompt with the same per-prompt seed as `rollout=vllm` (the two engines sample the same texts),
sent concurrently so the server batches them; tokens, their log-probs and texts come back
(`return_token_ids`, `logprobs=0`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
import torch
from requests.adapters import HTTPAdapter

from planlift.distributed import rank, world_size
from planlift.errors import ConfigError
from planlift.generation import encode_prompt, pad_as_end
from planlift.grpo.engines import Sampled, SyncedEngine, request_seed, requests_per_prompt, to_generation
from planlift.grpo.weights import planner_dtype, planner_weights
from planlift.models.policy import Policy
from planlift.retry import backoff_delay

log = logging.getLogger(__name__)

SERVED_NAME = "planner"


class ServerError(RuntimeError):
    """The rollout server failed a request after its retries (the message names the URL and the reply)."""


class VLLMServerEngine(SyncedEngine):
    """Samples the planner's rollouts from a vLLM server started with `planlift.executors.serve --rollouts`.

    Args:
        base_url: the server, e.g. http://127.0.0.1:8001 (no /v1).
        weights_dir: where the trainer writes each step's weights for the server to read (null: /dev/shm
            when present, else the temp dir; on another node: a filesystem both see).
        sync_weights: false never loads the trained weights (only to measure a stale engine).
        request_timeout_s / retries: per HTTP request; connection errors and 5xx are retried with
            exponential backoff, anything else raises `ServerError`.
        max_concurrency: rollout requests in flight at once (one per prompt).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8001",
        weights_dir: str | None = None,
        sync_weights: bool = True,
        request_timeout_s: float = 600.0,
        retries: int = 3,
        max_concurrency: int = 64,
    ) -> None:
        super().__init__(sync_weights)
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"rollout.base_url must be an http(s) URL, got {base_url!r}")
        if max_concurrency < 1 or retries < 0:
            raise ConfigError("rollout.max_concurrency must be >= 1 and rollout.retries >= 0")
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        if weights_dir is None:
            weights_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        self.weights_dir = weights_dir
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self.max_concurrency = max_concurrency
        self.session = requests.Session()
        pool = HTTPAdapter(pool_connections=1, pool_maxsize=max_concurrency)
        self.session.mount("http://", pool)
        self.session.mount("https://", pool)
        self._checked = False
        self.weight_bytes = 0
        self.retried = 0

    # ---- HTTP -------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        for attempt in range(self.retries + 1):
            try:
                reply = self.session.request(method, url, json=body, timeout=self.request_timeout_s)
            except requests.RequestException as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if reply.status_code == 200:
                    return reply.json() if reply.content else None
                problem = f"HTTP {reply.status_code}: {reply.text[:500]}"
                if reply.status_code < 500:
                    break  # the request is wrong; sending it again will not help
            if attempt < self.retries:
                self.retried += 1
                log.warning("rollout server: %s %s failed (%s); retrying", method, url, problem)
                time.sleep(self._backoff(attempt + 1))
        raise ServerError(f"rollout server {method} {url} failed: {problem}")

    def _backoff(self, retry: int) -> float:
        return backoff_delay(retry, base=1.0, cap=30.0)

    def start(self, policy: Policy) -> None:
        """Once: the server serves the planner, with the development endpoints and the sampled
        distribution's log-probs; a dtype other than the planner's is logged (it widens the mismatch)."""
        if self._checked:
            return
        how = "start it with `python -m planlift.executors.serve <planner checkpoint> --rollouts`"
        try:
            served = [m["id"] for m in self._request("GET", "/v1/models")["data"]]
        except ServerError as error:
            raise ServerError(f"{error}\n{how}") from None
        if SERVED_NAME not in served:
            raise ConfigError(f"rollout.base_url={self.base_url} serves {served}, not {SERVED_NAME!r}: {how}")
        try:
            info = self._request("GET", "/server_info?config_format=json")
        except ServerError as error:
            raise ConfigError(f"{error}\nno development endpoints (VLLM_SERVER_DEV_MODE=1): {how}") from None
        model = info["vllm_config"]["model_config"]
        if model.get("logprobs_mode") != "processed_logprobs":
            raise ConfigError(
                f"the rollout server returns {model.get('logprobs_mode')}, not processed_logprobs (the "
                f"log-probs of the distribution it samples, which the mismatch and TIS need): {how}"
            )
        if str(model.get("dtype")).removeprefix("torch.") != planner_dtype(policy):
            log.warning(
                "rollout server runs %s, the planner %s: the rollout-training mismatch grows with it",
                model.get("dtype"),
                planner_dtype(policy),
            )
        self._checked = True

    # ---- weights ----------------------------------------------------------------------------------

    def _load(self, policy: Policy) -> None:
        weights = planner_weights(policy)  # every rank: its checks, and the FSDP gather (a collective)
        if rank() == 0:  # only rank 0 computes the merged tensors and writes them
            path = os.path.join(self.weights_dir, f"planlift-weights-{uuid.uuid4().hex}.safetensors")
            try:
                self.weight_bytes = _write(weights, path)
                self._post("/collective_rpc", {"method": "load_planner_weights_from_file", "args": [path]})
                self._post("/reset_prefix_cache")  # cached prefixes were computed with the old weights
            finally:
                if os.path.exists(path):
                    os.remove(path)
        if world_size() > 1:
            torch.distributed.barrier()  # no rank samples before the server holds this step's weights

    # ---- sampling ---------------------------------------------------------------------------------

    def sample(self, policy, texts, n, *, greedy, temperature, top_p, max_new_tokens, stop, seed):
        self.start(policy)
        tokenizer = policy.tokenizer
        prompt_ids = [encode_prompt(tokenizer, text) for text in texts]
        asked = requests_per_prompt(n, greedy)

        def complete(i: int) -> list[Sampled]:
            reply = self._post(
                "/v1/completions",
                {
                    "model": SERVED_NAME,
                    "prompt": prompt_ids[i],
                    "n": asked,
                    "temperature": 0.0 if greedy else temperature,
                    "top_p": 1.0 if greedy else top_p,
                    "max_tokens": max_new_tokens,
                    "stop": list(stop) or None,
                    "stop_token_ids": pad_as_end(tokenizer, [tokenizer.eos_token_id]) or None,
                    "logprobs": 0,  # the sampled token's log-prob only
                    "return_token_ids": True,
                    "seed": request_seed(seed, i, prompt_ids[i], asked),
                },
            )
            choices = sorted(reply.get("choices") or [], key=lambda c: c["index"])
            if len(choices) != asked:
                raise ServerError(f"rollout server: {len(choices)} completions for n={asked}")
            return [_sampled(c) for c in choices]

        with ThreadPoolExecutor(max(1, min(self.max_concurrency, len(texts)))) as pool:
            samples = [s for group in pool.map(complete, range(len(texts))) for s in group]
        return self._counted(to_generation(tokenizer, prompt_ids, samples, stop, n, greedy))

    def metrics(self) -> dict[str, float]:
        return {
            **super().metrics(),
            "weight_megabytes": self.weight_bytes / 2**20,
            "server_retries": float(self.retried),
        }


def _sampled(choice: dict[str, Any]) -> Sampled:
    tokens = choice.get("token_ids")
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    if tokens is None or logprobs is None:
        raise ServerError(
            "rollout server: a completion without token_ids or log-probs (is it vLLM >= 0.10, started "
            "with planlift.executors.serve --rollouts?)"
        )
    return Sampled(list(tokens), [float(x) for x in logprobs], choice.get("text") or "")


def _write(weights: Iterable[tuple[str, torch.Tensor]], path: str) -> int:
    """Save `weights` as safetensors (tied tensors written as copies); returns the bytes written."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for name, tensor in weights:
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.data_ptr() in seen:
            tensor = tensor.clone()  # safetensors refuses shared storage (a tied lm_head)
        seen.add(tensor.data_ptr())
        tensors[name] = tensor
    save_file(tensors, path)
    return os.path.getsize(path)
