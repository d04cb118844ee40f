import multiprocessing as mp
import time

from occystrap.registry.ratelimit import SharedRateLimiter


def test_bucket_spaces_requests_after_the_burst():
    limiter = SharedRateLimiter(rate=50, burst=5)
    t0 = time.monotonic()
    for _ in range(20):
        limiter.acquire("h.io")
    # 5 from the burst, then 15 at 50/s: at least 0.3 s (a slow machine only adds to it)
    assert time.monotonic() - t0 >= 0.28


def test_hosts_have_their_own_buckets():
    limiter = SharedRateLimiter(rate=1, burst=3)
    assert [limiter.acquire(h) for h in ("a.io", "a.io", "a.io")] == [0.0, 0.0, 0.0]
    assert limiter.acquire("b.io") == 0.0  # a fresh bucket


def _take(limiter: SharedRateLimiter, n: int) -> None:
    for _ in range(n):
        limiter.acquire("h.io")


def test_shared_across_forked_processes():
    limiter = SharedRateLimiter(rate=40, burst=4)
    ctx = mp.get_context("fork")
    t0 = time.monotonic()
    procs = [ctx.Process(target=_take, args=(limiter, 8)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    # 24 tokens at 40/s with a burst of 4: at least 0.5 s whichever process took them
    assert time.monotonic() - t0 >= 0.45


def test_pause_from_ratelimit_headers():
    from occystrap.registry.ratelimit import pause_for

    assert pause_for("100;w=21600", "50;w=21600") == 0.0  # plenty left
    assert pause_for("100;w=21600", "10;w=21600") == 60.0  # 2160 s each: capped
    assert pause_for("100;w=60", "5;w=60") == 12.0  # the window spread over what is left
    assert pause_for("100;w=60", "0;w=60") == 60.0
    assert pause_for(None, "1") == 0.0
    assert pause_for("garbage", "1;w=x") == 0.0
