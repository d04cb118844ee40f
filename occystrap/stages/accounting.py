"""One stage's figures: the StageReport it sends when it finishes, and the live byte count.

Time is split three ways so the report can say where a stage stands: waiting for input and
blocked on a full output (both from the stage's channels, `ChannelStatistics`), and busy
(the rest of its wall time, or the clock a stage keeps itself when its work is in threads).
CPU (os.times) and I/O (/proc/self/io) are read at the end; request counts come from the
registry client's counters.

The live figure for the supervisor's per-second series is a running byte count in shared
memory, one slot per stage (`messages.STAGES` order), written by that stage only: fetch
counts bytes as they stream, the last stage counts a layer when it has it, the others when
a layer leaves them. Resolve moves no layer bytes and counts none.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from occystrap.channel import ChannelStatistics
from occystrap.messages import STAGES, ImagePlan, LayerDesc, Message, StageReport
from occystrap.registry.counters import COUNTERS
from occystrap.stages.progress import ProgressTracker

_REQUEST_FIELDS = (
    "retries",
    "throttled",
    "bytes_received",
    "bytes_sent",
    "mounts",
    "pauses",
    "paused_seconds",
)


class Accounting:
    """`moved`: the shared array of running byte counts (None: not kept). `last`: the stage
    has no output (a layer is moved once it arrives). `tracker`: fetch's progress."""

    def __init__(
        self,
        stage: str,
        moved: Any = None,
        last: bool = False,
        tracker: ProgressTracker | None = None,
    ) -> None:
        COUNTERS.reset()  # forked: the supervisor's counts are not this stage's
        self.report = StageReport(stage=stage)
        self.started = time.monotonic()
        self.busy_override: float | None = None  # for stages whose work is in threads
        self._moved = moved if stage != "resolve" else None  # resolve moves no layer bytes
        self._slot = STAGES.index(stage)
        self._last = last
        self._tracker = tracker
        self._streamed: dict[tuple[int, int], int] = {}  # (image, layer index) → bytes so far
        self._lock = threading.Lock()

    def received(self, msg: Message) -> None:
        """Count a message the stage received (a streaming announcement is not a layer)."""
        if isinstance(msg, LayerDesc) and msg.streaming:
            return
        with self._lock:
            if isinstance(msg, LayerDesc):
                self.report.bytes_in += msg.size
                if msg.present:
                    self.report.layers_skipped += 1
                    self.report.bytes_skipped += msg.size
                elif self._last:
                    self._add_moved(msg.size)  # the last stage: moved once it has it
            elif isinstance(msg, ImagePlan) and msg.up_to_date:
                self.report.bytes_skipped += _layer_bytes(msg.manifest)
        if self._tracker is not None:
            self._tracker.seen(msg)

    def sent(self, msg: Message) -> None:
        """Count a message the stage sent downstream: a layer that left counts what
        streaming did not (a local copy, a restart, or all of it in a stage that does not
        stream)."""
        if not isinstance(msg, LayerDesc) or msg.streaming:
            return
        with self._lock:
            self.report.bytes_out += msg.size
            if msg.present:
                return
            rest = msg.size - self._streamed.pop((msg.image_id, msg.index), 0)
            self._add_moved(rest)
        if self._tracker is not None:
            self._tracker.layer_out(msg.image_id, rest)

    def stream(self, layer: LayerDesc) -> Callable[[int], None]:
        """A callback for the bytes of `layer` as they stream (negative: a restart)."""
        key = (layer.image_id, layer.index)
        tracker = self._tracker

        def add(n: int) -> None:
            with self._lock:
                self._streamed[key] = self._streamed.get(key, 0) + n
                self._add_moved(n)
            if tracker is not None:
                tracker.streamed(layer.image_id, n)

        return add

    def _add_moved(self, n: int) -> None:
        """Add to the shared running count (call with the lock held)."""
        if self._moved is not None:
            self._moved[self._slot] += n

    def finish(
        self, inbox: ChannelStatistics | None, outbox: ChannelStatistics | None
    ) -> StageReport:
        """The report: the stage's channels say how long it waited and was blocked and how
        many messages it took and gave; the kernel its CPU and I/O; the client its requests."""
        if self._tracker is not None:
            self._tracker.close()
        report = self.report
        wall = time.monotonic() - self.started
        report.wall_seconds = wall
        if inbox is not None:
            report.items_in, report.wait_in_seconds = inbox.received, inbox.waiting_seconds
        if outbox is not None:
            report.items_out, report.wait_out_seconds = outbox.sent, outbox.blocked_seconds
        report.busy_seconds = (
            self.busy_override
            if self.busy_override is not None
            else max(0.0, wall - report.wait_in_seconds - report.wait_out_seconds)
        )
        cpu = os.times()
        report.cpu_seconds = cpu.user + cpu.system
        io = own_io()
        report.io_read_bytes = io.get("read_bytes", 0)
        report.io_write_bytes = io.get("write_bytes", 0)
        report.io_read_chars, report.io_write_chars = io.get("rchar", 0), io.get("wchar", 0)
        counts = COUNTERS.snapshot()
        report.requests = dict(counts["requests"])  # type: ignore[call-overload]
        for key in _REQUEST_FIELDS:
            setattr(report, key, counts[key])
        return report


def own_io() -> dict[str, int]:
    """This process's I/O counters from /proc/self/io (rchar, wchar: bytes through read and
    write calls; read_bytes, write_bytes: what reached the block layer), as psutil's
    io_counters reads them on Linux; {} where the kernel offers none (some containers).
    Read directly so that no stage imports psutil (the supervisor's sampler does, after the
    fork: stats/sampler.py)."""
    try:
        with open("/proc/self/io", "rb") as f:
            return {k.decode(): int(v) for k, _, v in (line.partition(b":") for line in f)}
    except (OSError, ValueError):
        return {}


def _layer_bytes(manifest: bytes) -> int:
    """The layer bytes a manifest names (an image found up to date avoids all of them)."""
    try:
        doc = msgspec.json.decode(manifest)
        return sum(int(la.get("size", 0)) for la in doc.get("layers") or [])
    except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
        return 0
