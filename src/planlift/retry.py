"""The wait between attempts that the HTTP backends (OpenAI executor, RM service) share."""

from __future__ import annotations

import math


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds; None when absent or unreadable (the HTTP-date form included)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def backoff_delay(retry: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before retry number `retry` (1, 2, ...): base * 2^(retry - 1), or the server's Retry-After
    when that is longer; never more than `cap` (a server cannot stall a run with Retry-After: 3600)."""
    delay = base * 2 ** (retry - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)
