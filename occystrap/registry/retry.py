"""Retry policy, kept free of I/O so it can be tested with tables and fake clocks.

*Whether* to retry is the error's verdict (`OccystrapError.retryable`, decided in errors.py:
transport failures and the statuses below); this module decides *how long* to wait and runs
the one retry loop (`retrying`) every request path shares. A server's Retry-After always
beats our own guess, because a rate limiter that says "60 s" means it: hammering it earlier
only extends the ban. The waiting itself is the caller's (`Pause`; see `ratelimit.Waits`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from datetime import UTC
from typing import TypeVar

from occystrap.errors import OccystrapError, TransientError

T = TypeVar("T")

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
        import email.utils  # an HTTP date is rare: most servers send seconds

        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # since Python 3.10 it raises rather than return None
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


def backoff_scale() -> float:
    """Tests shrink backoff with OCCYSTRAP_BACKOFF_SCALE; a bad value is ignored, not fatal."""
    try:
        scale = float(os.environ.get("OCCYSTRAP_BACKOFF_SCALE", "1.0"))
    except ValueError:
        return 1.0
    return scale if scale >= 0 else 1.0


class Budget:
    """Failures allowed for one logical operation (`--retries`), shared by all its requests:
    a blob's resumed downloads, an upload's chunks and recoveries, a request's redirects."""

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.used = 0

    @property
    def attempts(self) -> int:
        """Tries made so far, the one running included."""
        return self.used + 1

    def exhausted(self) -> bool:
        return self.used >= self.retries


#: (retry number, 0-based; the server's Retry-After or None; why, for a notice) → waits.
Pause = Callable[[int, float | None, str], None]


def _spent(exc: TransientError, attempts: int) -> OccystrapError:
    return exc.spent(attempts)


def retrying(
    budget: Budget,
    attempt: Callable[[], T],
    pause: Pause,
    *,
    why: Callable[[TransientError], str] = str,
    give_up: Callable[[TransientError, int], OccystrapError] = _spent,
) -> T:
    """Call `attempt` until it returns; return what it returns.

    A retryable error it raises (a TransientError whose retries are not spent) costs one
    retry of `budget`: `pause(retry number, retry_after, why(exc))` is called, then
    `attempt` again. When the budget is spent, `give_up(exc, attempts)` is raised (by
    default the same error with "after N attempts", final). Every other exception passes
    through at once. `attempt` may spend the budget itself (its own requests share it).
    """
    while True:
        try:
            return attempt()
        except TransientError as exc:
            if not exc.retryable:
                raise
            if budget.exhausted():
                raise give_up(exc, budget.attempts) from None
            pause(budget.used, exc.retry_after, why(exc))
            budget.used += 1
