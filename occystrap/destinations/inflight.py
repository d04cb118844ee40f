"""A blob in flight: the write side's view of a spool file that fetch is still filling.

Fetch announces a big download before its first byte (`LayerDesc.streaming`, the spool
file's path); the layer's own message follows once fetch has verified the whole blob's
sha256. Between the two, an uploader reads the spool file as it grows: `ready(end)` waits
until the file holds `end` bytes, `verified()` until the layer's own message arrived, and
both give up at once when the image fails (`cancel`). The file is the only thing the two
processes share; fetch only ever appends to it (a resume asks for `Range: bytes=N-`), so
its size is the one signal needed, read with `os.stat`.
"""

from __future__ import annotations

import os
import threading

from occystrap.errors import OccystrapError

# How long `ready` sleeps between looks at the file (seconds): short at first, since a
# download usually keeps up, longer when it stalls. A look is one stat (about 1 µs).
FIRST_WAIT = 0.002
LONGEST_WAIT = 0.05


class StreamCancelled(OccystrapError):
    """The image of a blob in flight failed (or the run ended) before its bytes were in."""


class BlobInFlight:
    """Spool file `path` of blob `digest`, `size` bytes when complete.

    Thread-safe: one uploader thread waits, the write stage's thread calls `verify` or
    `cancel`.
    """

    def __init__(self, path: str, digest: str, size: int) -> None:
        self.path = path
        self.digest = digest
        self.size = size
        self._verified = threading.Event()
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    # -- the write stage's side ------------------------------------------------------------

    def verify(self) -> None:
        """Fetch verified every byte: the upload may commit."""
        self._verified.set()

    def cancel(self) -> None:
        """The image failed: waiters raise StreamCancelled."""
        self._cancelled.set()

    @property
    def is_verified(self) -> bool:
        return self._verified.is_set()

    @property
    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def complete(self) -> bool:
        """Does the spool file hold all `size` bytes yet?"""
        return self._held() >= self.size

    # -- the uploader's side ---------------------------------------------------------------

    def ready(self, end: int) -> int:
        """Wait until the spool file holds bytes [0, end); returns how many it holds.
        Raises StreamCancelled."""
        wait = FIRST_WAIT
        while True:
            if self._cancelled.is_set():
                raise StreamCancelled(f"blob {self.digest}: its image failed while it downloaded")
            held = self._held()
            if held >= end:
                return held
            if self._verified.is_set():  # complete, yet short or gone: removed under us
                raise StreamCancelled(f"blob {self.digest}: its spool file is gone")
            self._cancelled.wait(wait)
            wait = min(wait * 2, LONGEST_WAIT)

    def verified(self) -> None:
        """Wait until fetch has verified the blob. Raises StreamCancelled."""
        while not self._verified.is_set():
            if self._cancelled.wait(LONGEST_WAIT):
                raise StreamCancelled(f"blob {self.digest}: its image failed while it downloaded")

    def _held(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:  # fetch has not opened it yet
            return 0
