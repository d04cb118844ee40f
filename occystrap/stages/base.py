"""What every stage process shares: queue I/O with accounting, failure bookkeeping, reports.

A stage reads msgspec-encoded messages from its input queue and writes to its output queue.
Time is split three ways so the report can say where a stage stands: waiting for input,
blocked on a full output queue, and busy (everything else).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

import psutil

from occystrap import messages
from occystrap.messages import ImageFailed, ImagePlan, LayerDesc, Message, Shutdown, StageReport


class StageIO:
    def __init__(self, name: str, inq: Queue[Any] | None, outq: Queue[Any] | None,
                 control: Queue[Any]) -> None:
        self.name = name
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
        return msg

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

    def tell(self, msg: Message) -> None:
        """Send to the supervisor."""
        self.control.put(messages.encode(msg))

    def fail(self, image_id: int, source: str, reason: str, downstream: bool = True) -> None:
        """Mark an image failed here (once) and tell the stages after this one."""
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
        self.tell(self.report)
