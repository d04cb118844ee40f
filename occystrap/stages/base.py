"""What every stage process shares: queue I/O with accounting, failure bookkeeping, reports.

A stage reads msgspec-encoded messages from its input queue and writes to its output queue.
Time is split three ways so the report can say where a stage stands: waiting for input,
blocked on a full output queue, and busy (everything else).

Live figures for the supervisor's per-second series and progress display go two cheap ways:
a running byte count in shared memory (one slot per stage, written by that stage only), and,
from fetch, `Progress` messages at most a few times a second per image.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

import msgspec
import psutil

from occystrap import messages
from occystrap.errors import from_library
from occystrap.messages import (
    ImageFailed,
    ImagePlan,
    LayerDesc,
    Message,
    Notice,
    Progress,
    Shutdown,
    StageReport,
)
from occystrap.registry import ratelimit
from occystrap.registry.counters import COUNTERS

PROGRESS_INTERVAL = 0.25  # seconds between Progress messages for one image, at most


class _Tracked:
    """One image's progress as fetch sees it."""

    __slots__ = ("source", "done", "total", "layers", "layers_done", "dirty")

    def __init__(self, source: str) -> None:
        self.source = source
        self.done = self.total = self.layers = self.layers_done = 0
        self.dirty = True


class StageIO:
    def __init__(self, name: str, inq: Queue[Any] | None, outq: Queue[Any] | None,
                 control: Queue[Any], moved: Any = None, slot: int = 0,
                 progress: bool = False) -> None:
        """`moved`: a shared array of running byte counts, `slot` this stage's entry.
        `progress`: send Progress messages (the fetch stage)."""
        COUNTERS.reset()  # forked: the supervisor's counts are not this stage's
        # long waits are said through the supervisor, between the result lines
        ratelimit.set_listener(lambda text: self.tell(Notice(stage=name, text=text)))
        self.name = name
        self._moved = moved
        self._slot = slot
        self._progress = progress
        self._tracked: dict[int, _Tracked] = {}
        self._streamed: dict[tuple[int, int], int] = {}  # (image, layer index) → bytes so far
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.inq = inq
        self.outq = outq
        self.control = control
        self.report = StageReport(stage=name)
        self.wait_in = 0.0
        self.wait_out = 0.0
        self.started = time.monotonic()
        self.failed: set[int] = set()
        self.sources: dict[int, str] = {}  # image id → its source URI, for messages
        self.busy_override: float | None = None  # for stages whose work is in threads
        self.crashed: list[BaseException] = []  # bugs met in worker threads (see guard)
        self._lock = threading.Lock()

    def get(self) -> Message:
        assert self.inq is not None
        t0 = time.monotonic()
        data = self.inq.get()
        self.wait_in += time.monotonic() - t0
        msg = messages.decode(data)
        with self._lock:
            self.report.items_in += 1
            if isinstance(msg, LayerDesc):
                self.report.bytes_in += msg.size
                if msg.present:
                    self.report.layers_skipped += 1
                    self.report.bytes_skipped += msg.size
                elif self.outq is None:
                    self._count_moved(msg.size)  # the last stage: moved once it has it
            elif isinstance(msg, ImagePlan) and msg.up_to_date:
                self.report.bytes_skipped += _layer_bytes(msg.manifest)
        if self._progress:
            self._track(msg)
        return msg

    def _count_moved(self, n: int) -> None:
        """Add to the shared running count (call with the lock held)."""
        if self._moved is not None and self.name != "resolve":  # resolve moves no layer bytes
            self._moved[self._slot] += n

    # -- progress (fetch) ------------------------------------------------------------------

    def _track(self, msg: Message) -> None:
        with self._lock:
            if isinstance(msg, ImagePlan):
                self._tracked[msg.image_id] = _Tracked(msg.source)
                # at once: the supervisor times the image from here
                self.tell(Progress(image_id=msg.image_id, source=msg.source, done=0, total=0))
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

    def progress_for(self, layer: LayerDesc) -> Callable[[int], None]:
        """A callback for the bytes of `layer` as they stream (negative: a restart)."""
        key = (layer.image_id, layer.index)

        def add(n: int) -> None:
            with self._lock:
                self._streamed[key] = self._streamed.get(key, 0) + n
                self._count_moved(n)
                image = self._tracked.get(layer.image_id)
                if image is not None:
                    image.done += n
                    image.dirty = True

        return add

    def _layer_out(self, layer: LayerDesc) -> None:
        """A layer left this stage: count what streaming did not (a local copy, a restart)."""
        if layer.present:
            return
        if not self._progress:
            self._count_moved(layer.size)
            return
        rest = layer.size - self._streamed.pop((layer.image_id, layer.index), 0)
        self._count_moved(rest)
        image = self._tracked.get(layer.image_id)
        if image is not None:
            image.done += rest
            image.layers_done += 1
            image.dirty = True

    def _tick(self) -> None:
        while not self._stop.wait(PROGRESS_INTERVAL):
            self._send_progress()

    def _send_progress(self) -> None:
        with self._lock:
            due = []
            for image_id, image in list(self._tracked.items()):
                if image.dirty:
                    image.dirty = False
                    due.append(Progress(image_id=image_id, source=image.source,
                                        done=image.done, total=image.total,
                                        layers_done=image.layers_done, layers=image.layers))
                if image.layers and image.layers_done >= image.layers:
                    del self._tracked[image_id]  # all its layers are through
        for msg in due:
            self.tell(msg)

    def put(self, msg: Message) -> None:
        assert self.outq is not None
        data = messages.encode(msg)
        t0 = time.monotonic()
        self.outq.put(data)
        waited = time.monotonic() - t0
        with self._lock:
            self.wait_out += waited
            self.report.items_out += 1
            if isinstance(msg, LayerDesc):
                self.report.bytes_out += msg.size
                self._layer_out(msg)

    def tell(self, msg: Message) -> None:
        """Send to the supervisor."""
        self.control.put(messages.encode(msg))

    def fail(self, image_id: int, source: str, reason: str, downstream: bool = True) -> None:
        """Mark an image failed here (once) and tell the stages after this one. A reason
        that starts with `source` (a source's own message) loses that prefix: the line shown
        is `source: reason`, and should name the source once."""
        reason = reason.removeprefix(f"{source}: ")
        with self._lock:
            if image_id in self.failed:
                return
            self.failed.add(image_id)
        if downstream:
            self.put(ImageFailed(image_id=image_id, source=source, stage=self.name,
                                 reason=reason))

    def drop(self, layer: LayerDesc) -> None:
        """A layer of a failed image: its spool file goes, the message stops here. A layer
        written in place into a tarball stays: the writer disowns its region."""
        if layer.path and layer.offset < 0:
            try:
                os.unlink(layer.path)
            except FileNotFoundError:
                pass

    def relay(self, on_layer: Callable[[LayerDesc], None],
              on_plan: Callable[[ImagePlan], None] | None = None,
              on_failed: Callable[[ImageFailed], None] | None = None) -> None:
        """The loop of a stage between resolve and write, until Shutdown (not forwarded: the
        caller finishes its in-flight work first).

        Plans and failures pass through in order, so a plan always precedes its layers
        downstream; layers of a failed image are dropped here; the rest go to `on_layer`.
        """
        while True:
            msg = self.get()
            if isinstance(msg, Shutdown):
                return
            if isinstance(msg, ImagePlan):
                self.sources[msg.image_id] = msg.source
                if on_plan is not None:
                    on_plan(msg)
                self.put(msg)
            elif isinstance(msg, ImageFailed):
                self.fail(msg.image_id, msg.source, msg.reason, downstream=False)
                if on_failed is not None:
                    on_failed(msg)
                self.put(msg)
            elif isinstance(msg, LayerDesc):
                if msg.image_id in self.failed:
                    self.drop(msg)
                else:
                    on_layer(msg)

    def guard(self, work: Callable[[LayerDesc], None], layer: LayerDesc) -> None:
        """Run `work(layer)` in a worker thread. A library's verdict on bad input or a bad
        disk (`errors.from_library`) fails the layer's image with one line. A bug there must
        not make the layer vanish silently (an executor keeps the exception in a future
        nobody reads, and the image would never complete): fail the image now, and
        `raise_crashed` ends the stage with it so the run reports an internal error with
        its traceback."""
        try:
            work(layer)
        except Exception as exc:
            mapped = from_library(exc, f"layer {layer.digest}")
            if mapped is not None:
                self.fail_layer(layer, str(mapped))
                return
            self.crashed.append(exc)
            self.fail_layer(layer, f"internal error in the {self.name} stage: "
                                   f"{type(exc).__name__}: {exc}")
        except BaseException as exc:
            self.crashed.append(exc)
            self.fail_layer(layer, f"internal error in the {self.name} stage: "
                                   f"{type(exc).__name__}: {exc}")

    def raise_crashed(self) -> None:
        if self.crashed:
            raise self.crashed[0]

    def fail_layer(self, layer: LayerDesc, reason: str) -> None:
        """This layer is bad: drop it and fail its image."""
        self.drop(layer)
        self.fail(layer.image_id, self.sources.get(layer.image_id, "?"), reason)

    def finish(self) -> None:
        wall = time.monotonic() - self.started
        cpu = psutil.Process().cpu_times()
        self.report.wall_seconds = wall
        self.report.cpu_seconds = cpu.user + cpu.system
        if self.busy_override is not None:
            self.report.busy_seconds = self.busy_override
        else:
            self.report.busy_seconds = max(0.0, wall - self.wait_in - self.wait_out)
        self.report.wait_in_seconds = self.wait_in
        self.report.wait_out_seconds = self.wait_out
        try:
            io = psutil.Process().io_counters()
            self.report.io_read_bytes, self.report.io_write_bytes = io.read_bytes, io.write_bytes
            self.report.io_read_chars = getattr(io, "read_chars", 0)
            self.report.io_write_chars = getattr(io, "write_chars", 0)
        except (psutil.Error, AttributeError, NotImplementedError):
            pass  # not every platform (or container) offers /proc/<pid>/io
        counts = COUNTERS.snapshot()
        self.report.requests = dict(counts["requests"])  # type: ignore[call-overload]
        for key in ("retries", "throttled", "bytes_received", "bytes_sent", "mounts",
                    "pauses", "paused_seconds"):
            setattr(self.report, key, counts[key])
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._send_progress()
        self.tell(self.report)


def _layer_bytes(manifest: bytes) -> int:
    """The layer bytes a manifest names (an image found up to date avoids all of them)."""
    try:
        doc = msgspec.json.decode(manifest)
        return sum(int(la.get("size", 0)) for la in doc.get("layers") or [])
    except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
        return 0
