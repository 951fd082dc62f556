"""A reasoning RM behind an HTTP service (`rm=http rm.url=...`; `python src/serve_rm.py` serves one).

The authors' contract: POST {"items": [{"problem", "reasoning", "task_name", "task_type"}],
"max_length", "batch_size"} -> {"scores": [...]} (a bare list is accepted too). Each request carries
at most `request_items` items. Connection errors, timeouts and 5xx answers are retried `retries` times
with exponential back-off; a request that still fails (or a 4xx, or a malformed answer) gives None for
its items, which the reward masks and counts — never a made-up score.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from planlift.errors import ConfigError
from planlift.rm.base import ReasoningRM, RMItem

log = logging.getLogger(__name__)


class RMServiceError(RuntimeError):
    """The service's answer could not be used."""


def parse_scores(answer: Any, expected: int) -> list[float | None]:
    """Scores from {"scores": [...]} or a bare list; each a finite number (or null for a failed item)."""
    scores = answer.get("scores") if isinstance(answer, dict) else answer
    if not isinstance(scores, list):
        raise RMServiceError(f"expected {{'scores': [...]}} or a list, got {str(answer)[:200]}")
    if len(scores) != expected:
        raise RMServiceError(f"{len(scores)} scores for {expected} items")
    parsed: list[float | None] = []
    for value in scores:
        if value is None:
            parsed.append(None)
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RMServiceError(f"score {value!r} is not a finite number")
        else:
            parsed.append(float(value))
    return parsed


class HttpRM(ReasoningRM):
    """Args:
    url: the scoring endpoint (e.g. http://host:8000/score).
    timeout: seconds per request (connect and read).
    retries: extra attempts after a connection error, timeout or 5xx answer.
    backoff: seconds before the first retry (doubled each time).
    batch_size / max_length: forwarded to the service.
    request_items: items per request (a batch larger than this is split).
    task_name: the `<task>` tag; null = the item's task type ("math" / "code"), as the authors' client.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000/score",
        timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.5,
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
        if request_items < 1 or batch_size < 1:
            raise ConfigError("rm.request_items and rm.batch_size must be >= 1")
        import requests

        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.batch_size = batch_size
        self.max_length = max_length
        self.request_items = request_items
        self.task_name = task_name
        self.session = requests.Session()
        self.requests = 0
        self.failed_requests = 0
        self.failed_items = 0

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

    def _post(self, items: Sequence[RMItem]) -> list[float | None]:
        import requests

        last_error = ""
        for attempt in range(1 + self.retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.requests += 1
            try:
                response = self.session.post(self.url, json=self.payload(items), timeout=self.timeout)
            except requests.RequestException as error:  # connection refused, timeout, reset ...
                last_error = f"{type(error).__name__}: {error}"
                continue
            if response.status_code >= 500:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise RMServiceError(f"HTTP {response.status_code}: {response.text[:500]}")
            try:
                return parse_scores(response.json(), len(items))
            except ValueError as error:  # invalid JSON (requests raises a ValueError subclass)
                raise RMServiceError(f"unusable answer: {error}") from None
        raise RMServiceError(f"no answer after {1 + self.retries} attempts ({last_error})")

    def score(self, items: Sequence[RMItem]) -> list[float | None]:
        scores: list[float | None] = []
        for start in range(0, len(items), self.request_items):
            chunk = items[start : start + self.request_items]
            try:
                scores += self._post(chunk)
            except RMServiceError as error:
                self.failed_requests += 1
                self.failed_items += len(chunk)
                log.warning("RM service %s failed for %d items: %s", self.url, len(chunk), error)
                scores += [None] * len(chunk)
        return scores
