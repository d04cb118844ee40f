"""Retry policy, kept free of I/O so the arithmetic can be tested with tables.

The client decides *whether* to retry (transport errors and the statuses below); this module
decides *how long* to wait. A server's Retry-After always beats our own guess, because a rate
limiter that says "60 s" means it: hammering it earlier only extends the ban.
"""

from __future__ import annotations

import email.utils
import math
from datetime import UTC

# 408/429 are the server asking us to come back later; 5xx except 501/505 are usually a proxy or
# backend hiccup. Everything else (4xx) will answer the same way next time.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Turn a Retry-After header into seconds from `now`, or None when it says nothing usable.

    RFC 9110 allows delay-seconds or an HTTP date; some servers send fractions, so floats are
    accepted too. A date in the past means "now" (0), not an error.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds):
            return None
        if math.isinf(seconds):
            return None if seconds < 0 else math.inf
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        # An HTTP date is always GMT; parsedate_to_datetime returns naive for "-0000".
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def backoff_delay(attempt: int, retry_after: float | None, cap: float = 60.0) -> float:
    """Seconds to sleep before retry number `attempt` (0-based: the first retry waits 1 s).

    Exponential growth spreads retries of many parallel downloads over time; the cap keeps a
    long run from stalling for minutes on one flaky blob.
    """
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap)
    exponent = max(attempt, 0)
    if exponent >= 64:
        return cap
    return min(float(2**exponent), cap)
