"""Failed images, known upstream: a small ring of image ids in shared memory.

Failures travel down the pipeline as `ImageFailed` messages, which is how every later stage
learns to drop an image's layers. A stage *before* the one that failed an image (fetch,
when write could not upload one) would not hear of it, and would go on downloading layers
nobody will use. So whoever fails an image also posts its id here; fetch, verify and
compress read what is new at each message and before each piece of work, and stop work on
it: queued work cancelled, nothing new started (work already running may finish).

Why a ring and not a channel: there is no one to wait for, nothing to flush, and it is
advisory: a stage that misses an id (more than `SIZE` posts between two of its reads) only
does work that the stages after it drop anyway, as before this side channel existed. Posting
costs one lock and two stores; reading, when nothing is new, one load.
"""

from __future__ import annotations

from multiprocessing.context import BaseContext


class FailedImages:
    """Posted by any stage (`post`), read by any (`news`: the ids posted since this
    process last asked). Make it before forking."""

    SIZE = 1024

    def __init__(self, ctx: BaseContext) -> None:
        self._ids = ctx.RawArray("q", self.SIZE)
        self._count = ctx.RawValue("q", 0)
        self._lock = ctx.Lock()
        self._seen = 0  # per process: a forked copy starts from where its parent was

    def post(self, image_id: int) -> None:
        with self._lock:
            n = self._count.value
            self._ids[n % self.SIZE] = image_id
            self._count.value = n + 1

    def news(self) -> list[int]:
        """Image ids failed since the last call in this process (oldest first; at most
        SIZE of them). Thread-safe."""
        if self._count.value == self._seen:  # the common case: one load, no lock
            return []
        with self._lock:
            n = self._count.value
            start = max(self._seen, n - self.SIZE)
            self._seen = n
            return [self._ids[i % self.SIZE] for i in range(start, n)]
