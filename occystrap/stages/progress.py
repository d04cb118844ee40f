"""Fetch's live progress: per image, the bytes fetched of the bytes asked for, sent to the
supervisor as `Progress` messages at most every PROGRESS_INTERVAL seconds per image (and at
once when an image's plan arrives: the supervisor times the image from there)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from occystrap.messages import ImageFailed, ImagePlan, LayerDesc, Message, Progress

PROGRESS_INTERVAL = 0.25  # seconds between Progress messages for one image, at most


class _Tracked:
    """One image's progress as fetch sees it."""

    __slots__ = ("source", "done", "total", "layers", "layers_done", "dirty")

    def __init__(self, source: str) -> None:
        self.source = source
        self.done = self.total = self.layers = self.layers_done = 0
        self.dirty = True


class ProgressTracker:
    """Counts what fetch receives and sends; a ticker thread says what changed."""

    def __init__(self, tell: Callable[[Progress], None]) -> None:
        self._tell = tell
        self._lock = threading.Lock()
        self._tracked: dict[int, _Tracked] = {}
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def seen(self, msg: Message) -> None:
        """A message fetch received."""
        with self._lock:
            if isinstance(msg, ImagePlan):
                self._tracked[msg.image_id] = _Tracked(msg.source)
                # at once: the supervisor times the image from here
                self._tell(Progress(image_id=msg.image_id, source=msg.source, done=0, total=0))
            elif isinstance(msg, ImageFailed):
                self._tracked.pop(msg.image_id, None)
            elif isinstance(msg, LayerDesc) and not msg.present:
                image = self._tracked.get(msg.image_id)
                if image is not None:
                    image.total += msg.size
                    image.layers += 1
                    image.dirty = True
        if self._ticker is None and self._tracked:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()

    def forget(self, image_id: int) -> None:
        """An image failed further down: no more progress for it."""
        with self._lock:
            self._tracked.pop(image_id, None)

    def streamed(self, image_id: int, n: int) -> None:
        """`n` more bytes of one of the image's layers arrived (negative: a restart)."""
        with self._lock:
            image = self._tracked.get(image_id)
            if image is not None:
                image.done += n
                image.dirty = True

    def layer_out(self, image_id: int, rest: int) -> None:
        """A layer left fetch; `rest`: its bytes that streaming did not count."""
        with self._lock:
            image = self._tracked.get(image_id)
            if image is not None:
                image.done += rest
                image.layers_done += 1
                image.dirty = True

    def close(self) -> None:
        """Stop the ticker and say the last figures."""
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._send()

    def _tick(self) -> None:
        while not self._stop.wait(PROGRESS_INTERVAL):
            self._send()

    def _send(self) -> None:
        with self._lock:
            due = []
            for image_id, image in list(self._tracked.items()):
                if image.dirty:
                    image.dirty = False
                    due.append(
                        Progress(
                            image_id=image_id,
                            source=image.source,
                            done=image.done,
                            total=image.total,
                            layers_done=image.layers_done,
                            layers=image.layers,
                        )
                    )
                if image.layers and image.layers_done >= image.layers:
                    del self._tracked[image_id]  # all its layers are through
        for msg in due:
            self._tell(msg)
