"""--rate-limit: one token bucket per registry host, shared by every thread of every stage
process; the pause a registry asks for when its own budget runs low (`pause_for`);
`announce`, which says so on stderr whenever a request waits longer than a second; and
`Waits`, through which every wait of a registry client goes (rate limit, backoff).

The buckets live in shared memory made before the stages fork, so the limit holds for the
whole run however the work is spread. Time is CLOCK_MONOTONIC, the same in every process.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from occystrap.registry.counters import COUNTERS
from occystrap.registry.retry import backoff_delay, backoff_scale

log = logging.getLogger(__name__)

SLOTS = 32  # hosts hash into this many buckets


class SharedRateLimiter:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        ctx = mp.get_context("fork")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._lock = ctx.Lock()
        self._tokens: Any = ctx.RawArray("d", [self.burst] * SLOTS)
        self._stamp: Any = ctx.RawArray("d", [time.monotonic()] * SLOTS)

    def acquire(self, host: str) -> float:
        """Take one request's token for `host`, sleeping as needed; returns seconds slept."""
        slot = zlib.crc32(host.encode()) % SLOTS
        slept = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                tokens = min(self.burst, self._tokens[slot] + (now - self._stamp[slot]) * self.rate)
                self._stamp[slot] = now
                if tokens >= 1.0:
                    self._tokens[slot] = tokens - 1.0
                    return slept
                self._tokens[slot] = tokens
                wait = (1.0 - tokens) / self.rate
            time.sleep(wait)
            slept += wait


_current: SharedRateLimiter | None = None


def install(rate: float | None) -> None:
    """Set up the shared limiter for this run (in the supervisor, before forking)."""
    global _current
    _current = SharedRateLimiter(rate) if rate else None


def current() -> SharedRateLimiter | None:
    return _current


def pause_for(limit: str | None, remaining: str | None, floor: float = 0.1) -> float:
    """Seconds to wait before the next request to a registry that announced its budget
    (`RateLimit-Limit: 100;w=21600`, `RateLimit-Remaining: 3;w=21600`, as Docker Hub does).

    Nothing while more than a tenth of the budget is left; below that, the rest of the
    window is spread over the remaining requests (capped at 60 s a request), so a long mirror
    slows down instead of hitting 429s. Unparseable headers mean no pause.
    """

    def parse(value: str | None) -> tuple[int, float] | None:
        if not value:
            return None
        head, _, params = value.partition(";")
        try:
            count = int(head.strip())
        except ValueError:
            return None
        window = 0.0
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key == "w":
                try:
                    window = float(val)
                except ValueError:
                    return None
        return count, window

    lim, rem = parse(limit), parse(remaining)
    if lim is None or rem is None or lim[0] <= 0:
        return 0.0
    left, window = rem[0], rem[1] or lim[1]
    if left > lim[0] / 10 or window <= 0:
        return 0.0
    return min(60.0, max(floor, window / max(left, 1)))


# -- saying so when a wait is long -------------------------------------------------------------

NOTICE_AFTER = 1.0  # seconds: a wait longer than this is said, never slept in silence

_listener: Callable[[str], None] | None = None


def set_listener(listener: Callable[[str], None] | None) -> None:
    """Where `announce` sends its lines: a stage process sends them to the supervisor,
    which prints them between the result lines; without one they go to stderr."""
    global _listener
    _listener = listener


def announce(host: str, seconds: float, why: str) -> None:
    """Say on stderr (through the listener) that requests to `host` wait `seconds`, and why,
    when that is longer than NOTICE_AFTER."""
    if seconds <= NOTICE_AFTER:
        return
    text = f"{host}: waiting {seconds:.1f} s: {why}"
    if _listener is not None:
        _listener(text)
    else:
        print(f"occystrap: {text}", file=sys.stderr, flush=True)


class Waits:
    """Every wait of one registry client: a long one is counted and said (never silent).

    `pause` is the `retry.Pause` of the client's retry loops: it counts the retry and
    sleeps the backoff (`retry.backoff_delay`, scaled by OCCYSTRAP_BACKOFF_SCALE in tests)
    or the server's Retry-After."""

    def __init__(
        self, host: str, scale: float | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.host = host
        self.scale = backoff_scale() if scale is None else scale
        self._sleep = sleep

    def wait(self, seconds: float, why: str) -> None:
        """Sleep `seconds`; over NOTICE_AFTER, count the pause and announce it with `why`."""
        if seconds > NOTICE_AFTER:
            COUNTERS.add("pauses")
            COUNTERS.add("paused_seconds", seconds)
            announce(self.host, seconds, why)
        self._sleep(seconds)

    def pause(self, attempt: int, retry_after: float | None, why: str) -> None:
        """Before retry number `attempt` (0-based) of something that failed because `why`."""
        COUNTERS.add("retries")  # every retry, of any kind, waits here first
        log.debug("%s: retry %d after %s", self.host, attempt + 1, why)
        self.wait(
            backoff_delay(attempt, retry_after) * self.scale, f"retry {attempt + 1} after {why}"
        )
