"""RequestCounters: per-host request counts and the other counters, thread-safe."""

from __future__ import annotations

import threading

from occystrap.registry.counters import RequestCounters


def test_counts_by_the_host_actually_sent_to() -> None:
    counters = RequestCounters()
    counters.request("https://r.test/v2/a/manifests/1")
    counters.request("https://user:pw@r.test/v2/b/blobs/x?sig=secret")
    counters.request("http://[::1]:5000/v2/")
    counters.add("retries")
    counters.add("bytes_received", 1000)
    counters.add("paused_seconds", 1.5)
    snap = counters.snapshot()
    assert snap["requests"] == {"r.test": 2, "[::1]:5000": 1}
    assert (snap["retries"], snap["bytes_received"], snap["paused_seconds"]) == (1, 1000, 1.5)
    counters.reset()
    assert counters.snapshot()["requests"] == {} and counters.snapshot()["retries"] == 0


def test_snapshot_is_a_copy() -> None:
    counters = RequestCounters()
    counters.request("https://r.test/")
    snap = counters.snapshot()
    counters.request("https://r.test/")
    assert snap["requests"] == {"r.test": 1}


def test_threads_lose_nothing() -> None:
    counters = RequestCounters()

    def work() -> None:
        for _ in range(2000):
            counters.request("https://r.test/")
            counters.add("bytes_sent", 3)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.snapshot()["requests"] == {"r.test": 8000}
    assert counters.snapshot()["bytes_sent"] == 24000
