"""A reasoning RM behind an HTTP service (`rm=http rm.url=...`; `python src/serve_rm.py` serves one).

The authors' contract: POST {"items": [{"problem", "reasoning", "task_name", "task_type"}],
"max_length", "batch_size"} -> {"scores": [...]} (a bare list is accepted too). Each request carries
at most `request_items` items; each attempt carries `X-Request-Id: <call>.<first item index>.<serial>.
<attempt>`, so a server's log can be joined with the items of one `score` call.

Anything but a usable answer is retried `retries` times with exponential back-off (or the server's
Retry-After, capped at `backoff_max`): connection errors, dropped connections, timeouts, 429 and 5xx,
truncated or malformed JSON, a 200 carrying an error object, a wrong number of scores, a score that is not
a finite number. A 4xx other than 429 is not retried. A request that still fails gives None for its items,
which the reward masks — never a made-up score — and is counted by kind in `metrics()` (the reward logs
them as `train/rm/*`). `score` never raises for a bad answer.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from planlift.errors import ConfigError
from planlift.retry import backoff_delay, retry_after_seconds
from planlift.rm.base import ReasoningRM, RMItem

log = logging.getLogger(__name__)


class RMServiceError(RuntimeError):
    """The service's answer could not be used; `kind` names the failure (http_503, timeout, ...)."""

    def __init__(
        self, message: str, kind: str = "malformed", retriable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retriable = retriable
        self.retry_after = retry_after


def parse_scores(answer: Any, expected: int) -> list[float | None]:
    """Scores from {"scores": [...]} or a bare list; each a finite number (or null for a failed item)."""
    if isinstance(answer, dict) and "error" in answer and "scores" not in answer:
        raise RMServiceError(f"the service answered an error: {str(answer['error'])[:200]}", "error_reply")
    scores = answer.get("scores") if isinstance(answer, dict) else answer
    if not isinstance(scores, list):
        raise RMServiceError(f"expected {{'scores': [...]}} or a list, got {str(answer)[:200]}")
    if len(scores) != expected:
        raise RMServiceError(f"{len(scores)} scores for {expected} items", "wrong_count")
    parsed: list[float | None] = []
    for value in scores:
        if value is None:
            parsed.append(None)
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RMServiceError(f"score {value!r} is not a finite number", "bad_score")
        else:
            parsed.append(float(value))
    return parsed


class HttpRM(ReasoningRM):
    """Args:
    url: the scoring endpoint (e.g. http://host:8000/score).
    timeout: seconds per attempt (connect and read).
    retries: extra attempts after an unusable answer (see the module docstring).
    backoff: seconds before the first retry (doubled each time, capped at backoff_max).
    backoff_max: the longest wait between attempts, a server's Retry-After included.
    batch_size / max_length: forwarded to the service.
    request_items: items per request (a batch larger than this is split).
    task_name: the `<task>` tag; null = the item's task type ("math" / "code"), as the authors' client.
    """

    resume_fields = (
        "requests",
        "attempts",
        "failed_requests",
        "failed_items",
        "null_scores",
        "attempt_failures",
        "request_failures",
    )

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000/score",
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        batch_size: int = 32,
        max_length: int = 1024,
        request_items: int = 256,
        task_name: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"rm.url must be an http(s) URL, got {url!r}")
        if timeout <= 0:
            raise ConfigError(f"rm.timeout must be > 0, got {timeout}")
        if retries < 0:
            raise ConfigError(f"rm.retries must be >= 0, got {retries}")
        if backoff < 0 or backoff_max < 0:
            raise ConfigError("rm.backoff and rm.backoff_max must be >= 0")
        if request_items < 1 or batch_size < 1:
            raise ConfigError("rm.request_items and rm.batch_size must be >= 1")
        import requests

        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.batch_size = batch_size
        self.max_length = max_length
        self.request_items = request_items
        self.task_name = task_name
        self.session = requests.Session()
        self.requests = 0  # requests (one per chunk of items), whatever their attempts
        self.attempts = 0
        self.failed_requests = 0  # requests that failed after their retries
        self.failed_items = 0  # items of those requests (scored None)
        self.null_scores = 0  # items the service itself answered null for
        self.attempt_failures: Counter[str] = Counter()  # every failed attempt, by kind
        self.request_failures: Counter[str] = Counter()  # failed requests, by the kind of their last attempt

    def payload(self, items: Sequence[RMItem]) -> dict[str, Any]:
        return {
            "items": [
                {
                    "problem": item.problem.text,
                    "reasoning": item.reasoning,
                    "task_name": self.task_name or item.task_type,
                    "task_type": item.task_type,
                }
                for item in items
            ],
            "max_length": self.max_length,
            "batch_size": self.batch_size,
        }

    def _attempt(self, payload: dict[str, Any], expected: int, request_id: str) -> list[float | None]:
        import requests

        try:
            response = self.session.post(
                self.url, json=payload, timeout=self.timeout, headers={"X-Request-Id": request_id}
            )
        except requests.Timeout as error:
            raise RMServiceError(f"no answer in {self.timeout}s", "timeout") from error
        except requests.exceptions.ChunkedEncodingError as error:  # the body ended early
            raise RMServiceError("the connection closed mid-answer", "truncated") from error
        except requests.RequestException as error:  # refused, reset or dropped
            raise RMServiceError(f"{type(error).__name__}: {error}", "connection") from error
        code = response.status_code
        if code != 200:
            raise RMServiceError(
                f"HTTP {code}: {response.text[:200]}",
                f"http_{code}",
                retriable=code == 429 or code >= 500,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        try:
            answer = response.json()
        except ValueError as error:  # invalid or truncated JSON (requests raises a ValueError subclass)
            raise RMServiceError(f"unusable answer: {error}", "malformed") from error
        return parse_scores(answer, expected)

    def _post(self, items: Sequence[RMItem], request_id: str) -> list[float | None]:
        """One request with its retries; raises RMServiceError when none of its attempts was usable."""
        payload = self.payload(items)
        self.requests += 1
        error: RMServiceError | None = None
        for attempt in range(1 + self.retries):
            if attempt:
                time.sleep(backoff_delay(attempt, self.backoff, self.backoff_max, error.retry_after))
            self.attempts += 1
            try:
                return self._attempt(payload, len(items), f"{request_id}.{attempt}")
            except RMServiceError as failed:
                error = failed
            self.attempt_failures[error.kind] += 1
            if not error.retriable:
                break
        raise error

    def score(self, items: Sequence[RMItem]) -> list[float | None]:
        scores: list[float | None] = []
        call = uuid.uuid4().hex[:12]
        for serial, start in enumerate(range(0, len(items), self.request_items)):
            chunk = items[start : start + self.request_items]
            try:
                found = self._post(chunk, f"{call}.{start}.{serial}")
            except Exception as error:  # RMServiceError, or a bug no answer should cause: mask, never raise
                kind = error.kind if isinstance(error, RMServiceError) else "unexpected"
                if kind == "unexpected":
                    log.exception("RM service %s: unexpected failure", self.url)
                self.failed_requests += 1
                self.failed_items += len(chunk)
                self.request_failures[kind] += 1
                log.warning("RM service %s failed for %d items: %s", self.url, len(chunk), error)
                found = [None] * len(chunk)
            else:
                self.null_scores += sum(score is None for score in found)
            scores += found
        return scores

    def metrics(self) -> dict[str, float]:
        out = {
            "requests": float(self.requests),
            "retries": float(self.attempts - self.requests),
            "failed_requests": float(self.failed_requests),
            "failed_items": float(self.failed_items),
            "null_scores": float(self.null_scores),
            "request_failure_rate": self.failed_requests / max(self.requests, 1),
        }
        out.update({f"failed_attempts/{k}": float(v) for k, v in self.attempt_failures.items()})
        out.update({f"failed_requests/{k}": float(v) for k, v in self.request_failures.items()})
        return out
