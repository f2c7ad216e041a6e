"""Retry policy for remote backends: which failures to retry, how long to wait, what to hide.

Waits grow exponentially with "equal jitter" (half fixed, half random), so many clients that
failed together do not come back together. A server's ``Retry-After`` (seconds or an HTTP
date) or ``retry-after-ms`` header wins over the computed wait.

>>> policy = RetryPolicy(max_retries=3, base=0.5, cap=4.0)
>>> [policy.ceiling(a) for a in range(5)]
[0.5, 1.0, 2.0, 4.0, 4.0]
>>> 0.25 <= policy.backoff(0) <= 0.5
True
>>> retryable_status(429), retryable_status(503), retryable_status(404)
(True, True, False)
>>> parse_retry_after({"Retry-After": "2"})
2.0
>>> parse_retry_after({"retry-after-ms": "150"})
0.15
>>> parse_retry_after({}) is None
True
>>> redact("bad key sk-abc123SECRET given", secrets=("sk-abc123SECRET",))
'bad key [redacted] given'
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_AFTER_LIMIT = 120.0
"""Longest wait a ``Retry-After`` header can impose (seconds); longer requests are clipped."""

_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}|\bBearer\s+\S+", re.IGNORECASE)


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt; waits ``base * 2**attempt`` capped at ``cap``."""

    max_retries: int = 5
    base: float = 0.5
    cap: float = 30.0

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt + 1``."""
        return min(self.cap, self.base * (2.0**attempt))

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """A jittered wait in ``[ceiling/2, ceiling]``."""
        top = self.ceiling(attempt)
        draw = (rng or random).random()
        return top / 2.0 + draw * top / 2.0

    def delay(self, attempt: int, headers: Mapping[str, str] | None = None) -> float:
        """The wait before the next attempt: the server's ``Retry-After`` if it sent one."""
        asked = parse_retry_after(headers or {})
        if asked is not None:
            return min(max(asked, 0.0), RETRY_AFTER_LIMIT)
        return self.backoff(attempt)


def retryable_status(status: int) -> bool:
    """Rate limits, request timeouts and server errors are worth another try; other 4xx are not."""
    return status in (408, 409, 429) or status >= 500


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000.0
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove secrets (and anything shaped like an API key) from a message before it is shown."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)
