"""--rate-limit: one token bucket per registry host, shared by every thread of every stage
process; the pause a registry asks for when its own budget runs low (`pause_for`); and
`announce`, which says so on stderr whenever a request waits longer than a second.

The buckets live in shared memory made before the stages fork, so the limit holds for the
whole run however the work is spread. Time is CLOCK_MONOTONIC, the same in every process.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

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
                tokens = min(self.burst,
                             self._tokens[slot] + (now - self._stamp[slot]) * self.rate)
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
