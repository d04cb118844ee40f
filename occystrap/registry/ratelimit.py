"""--rate-limit: one token bucket per registry host, shared by every thread of every stage
process.

The buckets live in shared memory made before the stages fork, so the limit holds for the
whole run however the work is spread. Time is CLOCK_MONOTONIC, the same in every process.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import zlib
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
