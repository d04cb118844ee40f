"""What this process asked of registries, for the statistics report (`COUNTERS`)."""

from __future__ import annotations

import threading
import urllib.parse


class RequestCounters:
    """What this process asked of registries, for the statistics report.

    One instance per process (`COUNTERS`); each stage process reads and resets its own after
    the fork, so the report can say which stage made the requests, retried or was throttled.
    Counting is a dict update under a lock: noise next to an HTTP round trip.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: dict[str, int] = {}  # host (of the URL actually sent to) → count
            self.retries = 0
            self.throttled = 0  # 429 answers
            self.bytes_received = 0  # blob bodies
            self.bytes_sent = 0  # blob uploads, resent parts included
            self.mounts = 0
            self.pauses = 0  # waits over a second (ratelimit.NOTICE_AFTER), each said
            self.paused_seconds = 0.0

    def request(self, url: str) -> None:
        """Count one request sent to `url`'s host (token requests are not counted)."""
        host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
        with self._lock:
            self.requests[host] = self.requests.get(host, 0) + 1

    def add(self, field: str, n: float = 1) -> None:
        """Add `n` to the counter named `field` (retries, throttled, bytes_received, …)."""
        with self._lock:
            setattr(self, field, getattr(self, field) + n)

    def snapshot(self) -> dict[str, object]:
        """Every counter, as a plain dict (a copy)."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "retries": self.retries,
                "throttled": self.throttled,
                "bytes_received": self.bytes_received,
                "bytes_sent": self.bytes_sent,
                "mounts": self.mounts,
                "pauses": self.pauses,
                "paused_seconds": self.paused_seconds,
            }


COUNTERS = RequestCounters()
