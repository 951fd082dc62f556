"""An executor behind any OpenAI-compatible HTTP server (`vllm serve` in production).

One `generate` call sends its requests through a bounded thread pool. Each prompt asks for its `n`
samples in one request (`n=k`). A reply with fewer choices than asked keeps its choices and the missing
samples are fetched as single-sample requests; after `N_EVIDENCE` such replies in a row (a server that
ignores `n`, as llama.cpp does) every later prompt is fanned out from the start (logged once).

Every request has a timeout and is retried with exponential backoff (or the server's Retry-After, capped)
on anything but a usable reply: timeouts, dropped connections, truncated or malformed bodies, 429/5xx, a
200 carrying an error object, no choices, a choice without text. 4xx replies are not retried. Extra
choices are dropped. A circuit breaker stops sending for `breaker_cooldown_s` after `breaker_threshold`
consecutive failed attempts, so a dead server costs one timeout per prompt instead of every retry. A
prompt with any failed request becomes `ExecutorResult(error=...)`: the reward masks and counts it;
`metrics()` reports the failures by kind. No reply makes `generate` raise.

Each attempt carries `X-Request-Id: <call>.<prompt index>.<serial>.<attempt>`, so a server's log can be
joined with the prompts of one `generate` call and a retry told from its first attempt (the ids differ
per attempt: vLLM refuses an id that is still running, as a timed-out attempt may be).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from planlift.errors import ConfigError
from planlift.executors.base import Executor, ExecutorResult, check_sampling, request_seed
from planlift.generation import cut_at_stop, encode_prompt, render_prompt, strip_control_tokens
from planlift.retry import backoff_delay, retry_after_seconds
from planlift.tasks.base import ChatPrompt

log = logging.getLogger(__name__)

APIS = ("completions", "chat")
N_MODES = ("auto", "native", "fanout")
# n_mode=auto decides that a server ignores `n` after this many short replies in a row to n > 1 requests
# (one short reply can be a transient fault, not the server's policy)
N_EVIDENCE = 3


class RequestFailed(Exception):
    """One attempt failed; `kind` names the failure (http_500, timeout, malformed, ...)."""

    def __init__(
        self, kind: str, detail: str, retriable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.retriable = retriable
        self.retry_after = retry_after  # seconds the server asked to wait (Retry-After), if any


class CircuitBreaker:
    """Opens after `threshold` consecutive failed attempts; lets one probe through after `cooldown_s`."""

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.trips = 0
        self._probing = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if self.consecutive_failures < self.threshold:
                return True
            if time.monotonic() < self.open_until or self._probing:
                return False
            self._probing = True  # half-open: one request decides
            return True

    def record(self, ok: bool) -> None:
        with self._lock:
            self._probing = False
            if ok:
                self.consecutive_failures = 0
                return
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.threshold:
                if time.monotonic() >= self.open_until:
                    self.trips += 1
                self.open_until = time.monotonic() + self.cooldown_s


@dataclass
class _Request:
    prompt_index: int
    samples: int  # choices asked for
    seed: int | None
    id: str = ""  # X-Request-Id: <call>.<prompt index>.<serial>


class OpenAIExecutor(Executor):
    """A frozen executor served over the OpenAI completions or chat API.

    Args:
        base_url: server root, e.g. http://127.0.0.1:8000/v1.
        model: the served model name (vLLM: the path or --served-model-name).
        api: "completions" (the prompt rendered here, prefill included) or "chat" (messages; the prefill is
            sent as a final assistant message continued by the server: vLLM's `continue_final_message`).
        tokenizer: a checkpoint whose chat template renders completion prompts (None = plain
            `system\\nuser` + prefill, as `HFExecutor` renders a tokenizer without a template).
        n_mode: auto (ask for n, fall back to n single requests when the server ignores n) | native | fanout.
        max_concurrency: requests in flight at once.
        timeout_s / max_retries / backoff_s / backoff_max_s: per attempt; retry waits backoff_s * 2^i
            (capped, with jitter), or the server's Retry-After when longer (capped at backoff_max_s).
        breaker_threshold / breaker_cooldown_s: the circuit breaker.
        seed: base of the per-request seeds (each request's seed follows the previous one's by the number of
            replies it asked for), None = no seed sent.
        api_key_env: environment variable holding the bearer token (unset = no auth header).
    """

    # what a resumed run continues: the request seeds (sampled replies depend on them), the n decision
    resume_fields = (
        "requests_sent",
        "attempts",
        "retries",
        "attempt_failures",
        "request_failures",
        "n_fallback_requests",
        "extra_choices",
        "n_supported",
        "_short_streak",
        "_seed_counter",
    )

    def __init__(
        self,
        base_url: str,
        model: str,
        api: str = "completions",
        temperature: float = 0.5,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
        tokenizer: str | None = None,
        use_chat_template: bool | None = None,
        n_mode: str = "auto",
        max_concurrency: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        breaker_threshold: int = 20,
        breaker_cooldown_s: float = 30.0,
        seed: int | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if api not in APIS:
            raise ConfigError(f"executor.api must be one of {list(APIS)}, got {api!r}")
        if n_mode not in N_MODES:
            raise ConfigError(f"executor.n_mode must be one of {list(N_MODES)}, got {n_mode!r}")
        check_sampling(temperature, top_p, max_new_tokens)
        for key, value, low in (
            ("max_concurrency", max_concurrency, 1),
            ("max_retries", max_retries, 0),
            ("breaker_threshold", breaker_threshold, 1),
        ):
            if value < low:
                raise ConfigError(f"executor.{key} must be >= {low}, got {value}")
        if timeout_s <= 0 or backoff_s < 0 or backoff_max_s < 0 or breaker_cooldown_s < 0:
            raise ConfigError("executor.timeout_s must be > 0 and the backoff/cooldown times >= 0")
        import requests
        from requests.adapters import HTTPAdapter

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.use_chat_template = use_chat_template
        self.n_mode = n_mode
        self.n_supported: bool | None = {"auto": None, "native": True, "fanout": False}[n_mode]
        self._short_streak = 0  # short replies in a row to n > 1 requests (n_mode=auto)
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_s)
        self.seed = seed
        self.extra_body = dict(extra_body or {})
        self.tokenizer = None
        self.tokenizer_source = tokenizer
        if tokenizer is not None:
            from planlift.models.loading import load_tokenizer, locate_checkpoint

            self.tokenizer = load_tokenizer(locate_checkpoint(tokenizer, "executor.tokenizer"))
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_maxsize=max_concurrency))
        self.session.mount("https://", HTTPAdapter(pool_maxsize=max_concurrency))
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"
        self.requests_sent = 0
        self.attempts = 0
        self.retries = 0
        self.attempt_failures: Counter[str] = Counter()  # every failed attempt, by kind
        self.request_failures: Counter[str] = Counter()  # requests that failed after their retries
        self.n_fallback_requests = 0
        self.extra_choices = 0  # replies with more choices than asked (the extras are dropped)
        self._seed_counter = 0
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    @property
    def identity(self) -> str:
        return (
            f"openai:{self.base_url}:{self.model}:{self.api}:t={self.temperature}:p={self.top_p}"
            f":max={self.max_new_tokens}:chat={self.use_chat_template}:tokenizer={self.tokenizer_source}"
            f":extra={json.dumps(self.extra_body, sort_keys=True)}"  # it can override the sampling fields
            + (":prompt=ids" if self.api == "completions" and self.tokenizer is not None else "")
        )

    # ---- one generate call ------------------------------------------------------------------------

    def _generate(self, prompts: Sequence[ChatPrompt], n: int, greedy: bool) -> list[ExecutorResult]:
        # Greedy decoding is deterministic: one sample, repeated (vLLM refuses n > 1 when greedy).
        asked = 1 if greedy else n
        texts: list[list[str]] = [[] for _ in prompts]
        errors: list[str | None] = [None] * len(prompts)
        call = uuid.uuid4().hex[:12]
        serial = itertools.count()

        def request(i: int, samples: int) -> _Request:
            return _Request(i, samples, self._next_seed(samples), f"{call}.{i}.{next(serial)}")

        first = [request(i, asked) for i in range(len(prompts))]
        if self.n_supported is False and asked > 1:
            first = [request(i, 1) for i in range(len(prompts)) for _ in range(asked)]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            shortfall = self._run(pool, first, prompts, greedy, texts, errors)
            if shortfall:  # the missing samples, one request each
                more = [request(i, 1) for i, missing in shortfall for _ in range(missing)]
                self.n_fallback_requests += len(more)
                for i, missing in self._run(pool, more, prompts, greedy, texts, errors):
                    errors[i] = errors[i] or f"short_reply: {missing} samples missing after the fan-out"
        results = []
        for i, prompt in enumerate(prompts):
            if errors[i] is not None:
                results.append(ExecutorResult(error=errors[i]))
                continue
            found = [cut_at_stop(text, prompt.stop) for text in texts[i]]
            results.append(ExecutorResult(texts=tuple(found * n if greedy else found[:n])))
        failed = sum(e is not None for e in errors)
        if failed:
            log.warning(
                "openai executor: %d of %d prompts failed (%s)",
                failed,
                len(prompts),
                ", ".join(
                    f"{k}={v}" for k, v in sorted(Counter(e.split(":")[0] for e in errors if e).items())
                ),
            )
        return results

    def _run(
        self,
        pool: ThreadPoolExecutor,
        batch: list[_Request],
        prompts: Sequence[ChatPrompt],
        greedy: bool,
        texts: list[list[str]],
        errors: list[str | None],
    ) -> list[tuple[int, int]]:
        """Send `batch`; fill `texts` / `errors`; return (prompt index, missing samples) for short replies."""
        futures = [(r, pool.submit(self._request, prompts[r.prompt_index], r, greedy)) for r in batch]
        shortfall = []
        for request, future in futures:
            i = request.prompt_index
            try:
                got = future.result()
            except RequestFailed as error:
                errors[i] = errors[i] or str(error)
                continue
            except Exception as error:  # a bug or an exception no reply should cause: mask, never raise
                log.exception("openai executor: request %s failed unexpectedly", request.id)
                with self._lock:
                    self.request_failures["unexpected"] += 1
                errors[i] = errors[i] or f"unexpected: {type(error).__name__}: {error}"
                continue
            texts[i].extend(got)
            if request.samples > 1:
                self._judge_n_support(full=len(got) >= request.samples)
            if len(got) < request.samples:  # n_mode=native retries short replies in `_request`
                shortfall.append((i, request.samples - len(got)))
        return shortfall

    def _judge_n_support(self, full: bool) -> None:
        """n_mode=auto: a full reply to an n > 1 request resets the evidence; N_EVIDENCE short ones in a row
        decide that the server ignores n (logged once), and later calls fan out from the start."""
        if self.n_mode != "auto":
            return
        with self._lock:
            self._short_streak = 0 if full else self._short_streak + 1
            if full and self.n_supported is None:
                self.n_supported = True
            if self._short_streak >= N_EVIDENCE and self.n_supported is not False:
                self.n_supported = False
                log.warning(
                    "openai executor: %s returned fewer choices than n in %d replies in a row: it ignores n; "
                    "fanning out single-sample requests from now on",
                    self.base_url,
                    self._short_streak,
                )

    def _next_seed(self, samples: int) -> int | None:
        """The seed of a request for `samples` replies. vLLM seeds reply j of a request with seed + j, so the
        counter moves on by `samples`: no two replies of a run share a seed."""
        if self.seed is None:
            return None
        with self._lock:
            first = self._seed_counter + 1
            self._seed_counter += samples
            return request_seed(self.seed, first)

    # ---- one request with retries -----------------------------------------------------------------

    def _request(self, prompt: ChatPrompt, request: _Request, greedy: bool) -> list[str]:
        body = self._body(prompt, request, greedy)
        url = f"{self.base_url}/{'chat/completions' if self.api == 'chat' else 'completions'}"
        with self._lock:
            self.requests_sent += 1
        error: RequestFailed | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.retries += 1
                jitter = 0.5 + self._rng.random() / 2  # spreads the retries of concurrent requests
                retry_after = error.retry_after if error is not None else None
                delay = backoff_delay(attempt, self.backoff_s * jitter, self.backoff_max_s, retry_after)
                time.sleep(delay)
            if not self.breaker.allow():
                error = RequestFailed("circuit_open", f"{self.base_url} failed repeatedly", retriable=False)
            else:
                try:
                    choices = self._post(url, body, f"{request.id}.{attempt}")
                    if len(choices) > request.samples:
                        with self._lock:
                            self.extra_choices += 1
                        choices = choices[: request.samples]  # extra choices are dropped
                    if not choices or (self.n_mode == "native" and len(choices) < request.samples):
                        raise RequestFailed("short_reply", f"{len(choices)} of n={request.samples} choices")
                except RequestFailed as failed:
                    error = failed
                else:
                    self.breaker.record(ok=True)
                    with self._lock:
                        self.attempts += 1
                    return choices
                self.breaker.record(ok=False)
            with self._lock:
                self.attempts += 1
                self.attempt_failures[error.kind] += 1
            if not error.retriable:
                break
        with self._lock:
            self.request_failures[error.kind] += 1
        raise error

    def _post(self, url: str, body: dict[str, Any], request_id: str) -> list[str]:
        import requests

        try:
            response = self.session.post(
                url, json=body, timeout=self.timeout_s, headers={"X-Request-Id": request_id}
            )
        except requests.Timeout as error:
            raise RequestFailed("timeout", f"no reply in {self.timeout_s}s") from error
        except requests.exceptions.ChunkedEncodingError as error:  # the body ended early
            raise RequestFailed("truncated", "the connection closed mid-reply") from error
        except requests.RequestException as error:  # refused, reset or dropped
            raise RequestFailed("connection", type(error).__name__) from error
        if response.status_code != 200:
            code = response.status_code
            retriable = code == 429 or code >= 500
            raise RequestFailed(
                f"http_{code}",
                response.text[:200].replace("\n", " "),
                retriable,
                retry_after_seconds(response.headers.get("Retry-After")),
            )
        try:
            answer = response.json()
        except ValueError as error:
            raise RequestFailed("malformed", "the reply body is not JSON") from error
        if isinstance(answer, dict) and "error" in answer and "choices" not in answer:
            raise RequestFailed("error_reply", str(answer["error"])[:200])
        try:
            choices = answer["choices"]
            found = [c["message"]["content"] if self.api == "chat" else c["text"] for c in choices]
        except (KeyError, TypeError, IndexError) as error:
            raise RequestFailed("malformed", f"{type(error).__name__} in the reply body") from error
        if not all(isinstance(text, str) for text in found):  # a choice without text is not an empty answer
            raise RequestFailed("no_text", "a choice has no text")
        return found

    def _body(self, prompt: ChatPrompt, request: _Request, greedy: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": request.samples,
            "temperature": 0.0 if greedy else self.temperature,
            "top_p": 1.0 if greedy else self.top_p,
            "max_tokens": self.max_new_tokens,
            **self.extra_body,
        }
        if prompt.stop:
            body["stop"] = list(prompt.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if self.api == "completions":
            if self.tokenizer is not None:
                # token ids: a server tokenizing the text would add its BOS to the template's own
                text = render_prompt(self.tokenizer, prompt, self.use_chat_template)
                body["prompt"] = encode_prompt(self.tokenizer, text)
            else:
                text = f"{prompt.system}\n{prompt.user}" if prompt.system else prompt.user
                body["prompt"] = strip_control_tokens(text) + prompt.prefill
            return body
        # the server's chat template reads control-token spellings in a message as the real tokens
        system, user = (strip_control_tokens(t or "", self.tokenizer) for t in (prompt.system, prompt.user))
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        if prompt.prefill:
            messages.append({"role": "assistant", "content": prompt.prefill})
            body.update(continue_final_message=True, add_generation_prompt=False)
        body["messages"] = messages
        return body

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        with self._lock:
            sent = max(self.requests_sent, 1)
            out.update(
                {
                    "requests": float(self.requests_sent),
                    "retries": float(self.retries),
                    "failed_requests": float(sum(self.request_failures.values())),
                    "request_failure_rate": sum(self.request_failures.values()) / sent,
                    "attempt_failure_rate": sum(self.attempt_failures.values()) / max(self.attempts, 1),
                    "breaker_trips": float(self.breaker.trips),
                    "n_fallback_requests": float(self.n_fallback_requests),
                    "extra_choices": float(self.extra_choices),
                }
            )
            out.update({f"failed_attempts/{k}": float(v) for k, v in self.attempt_failures.items()})
            out.update({f"failed_requests/{k}": float(v) for k, v in self.request_failures.items()})
        return out
