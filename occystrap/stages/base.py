"""What every stage process shares: one relay loop with hooks, failure bookkeeping, and the
way a stage process starts, crashes and ends.

A stage between resolve and write receives plans, layers and failures from its inbox and
passes them on to its outbox: plans and failures in order (so a plan always precedes its
layers downstream), layers of a failed image dropped, the rest handed to `on_layer`, which
puts them on when done. A subclass fills in the hooks:

    on_plan(plan)        an image's plan arrived (before it is passed on)
    on_layer(layer)      a layer of an image not failed; the stage sends it on when done
    on_failed(failed)    an ImageFailed arrived (before it is passed on)
    on_abandoned(id)     a stage further down failed this image (`FailedImages`): stop work
    poll()               news from elsewhere, at each message (and every `poll_every` s)
    finish()             the input has ended: finish the work in flight

Resolve has no inbox and overrides `run`; write has no outbox and uses the same hooks.
When `run` returns, the outbox is closed (that is the end of the stream downstream), the
stage's report goes to the supervisor, and the process exits.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

import msgspec

from occystrap.channel import EndOfChannel, Receiver, Sender
from occystrap.errors import from_library
from occystrap.files import unlink_quietly
from occystrap.messages import (
    ImageFailed,
    ImagePlan,
    LayerDesc,
    Message,
    Notice,
    StageCrashed,
)
from occystrap.registry import ratelimit
from occystrap.stages.accounting import Accounting
from occystrap.stages.failures import FailedImages
from occystrap.stages.progress import ProgressTracker


class Wiring(msgspec.Struct, frozen=True):
    """A stage's connections, made by the supervisor before the fork: its inbox (None for
    resolve), outbox (None for write), the control channel to the supervisor, the ring of
    failed images, and the shared running byte counts (None: not kept)."""

    name: str
    inbox: Receiver | None
    outbox: Sender | None
    control: Sender
    failures: FailedImages | None = None
    moved: Any = None


def error_kind(exc: BaseException) -> str:
    """What an ImageFailed says the error was: the class name of the error tree's class
    (`from_library` mapped), or a bug's own class name."""
    mapped = from_library(exc) if isinstance(exc, Exception) else None
    return mapped.kind if mapped is not None else type(exc).__name__


class Stage:
    """One stage process (see the module docstring for the hooks)."""

    # learn of failures further down (FailedImages) and stop work on those images
    watches_failures: ClassVar[bool] = False
    # send Progress for each image (fetch)
    tracks_progress: ClassVar[bool] = False
    # seconds between calls of `poll` while the inbox is quiet (None: only at messages)
    poll_every: ClassVar[float | None] = None

    def __init__(self, wiring: Wiring) -> None:
        self.name = wiring.name
        self.inbox = wiring.inbox
        self.outbox = wiring.outbox
        self.control = wiring.control
        self.failures = wiring.failures
        self.failed: set[int] = set()
        self.sources: dict[int, str] = {}  # image id → its source URI, for messages
        self.crashed: list[BaseException] = []  # bugs met in worker threads (see guard)
        self.tracker = ProgressTracker(self.tell) if self.tracks_progress else None
        self.accounting = Accounting(
            self.name, wiring.moved, last=self.outbox is None, tracker=self.tracker
        )
        # long waits are said through the supervisor, between the result lines
        ratelimit.set_listener(lambda text: self.tell(Notice(stage=self.name, text=text)))

    # -- hooks -----------------------------------------------------------------------------

    def on_plan(self, plan: ImagePlan) -> None:
        """An image's plan arrived; it is passed on after this returns."""

    def on_layer(self, layer: LayerDesc) -> None:
        """A layer of an image not failed. Default: pass it on."""
        self.put(layer)

    def on_failed(self, failed: ImageFailed) -> None:
        """An image failed upstream; the ImageFailed is passed on after this returns.
        Default: mark it failed here (an override calls this first, or marks it itself)."""
        self.mark_failed(failed.image_id, announce=False)

    def on_abandoned(self, image_id: int) -> None:
        """An image failed further down the pipeline: stop work on it."""

    def finish(self) -> None:
        """The input has ended: finish in-flight work (wait for worker threads)."""

    def poll(self) -> None:
        """Look for news that does not come through the inbox: at every message, and every
        `poll_every` seconds while the inbox is quiet. Default: `learn_failures`."""
        self.learn_failures()

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Relay until the input ends, then `finish`, then end with a worker's bug if any."""
        assert self.inbox is not None
        while True:
            try:
                msg = self.inbox.receive(self.poll_every)
            except EndOfChannel:
                break
            except TimeoutError:
                self.poll()
                continue
            self.accounting.received(msg)
            self.poll()
            if isinstance(msg, ImagePlan):
                self.sources[msg.image_id] = msg.source
                self.on_plan(msg)
                if self.outbox is not None:
                    self.put(msg)
            elif isinstance(msg, ImageFailed):
                self.on_failed(msg)
                if self.outbox is not None:
                    self.put(msg)
            elif isinstance(msg, LayerDesc):
                if msg.image_id in self.failed:
                    self.drop(msg)
                else:
                    self.on_layer(msg)
        self.finish()
        self.raise_crashed()

    def learn_failures(self) -> None:
        """Take in the images failed further down since the last look (a cheap read of
        shared memory when there is nothing new); call at each decision point."""
        if not self.watches_failures or self.failures is None:
            return
        for image_id in self.failures.news():
            if image_id not in self.failed:
                self.failed.add(image_id)
                self.on_abandoned(image_id)

    # -- sending ---------------------------------------------------------------------------

    def put(self, msg: Message) -> None:
        """Send downstream (blocks while the outbox is full)."""
        assert self.outbox is not None
        self.outbox.send(msg)
        self.accounting.sent(msg)

    def tell(self, msg: Message) -> None:
        """Send to the supervisor."""
        self.control.send(msg)

    # -- failures --------------------------------------------------------------------------

    def mark_failed(self, image_id: int, announce: bool = True) -> bool:
        """Note the image failed; False if it already was. `announce`: the failure is news
        to the stages before this one (posted to FailedImages; not for an ImageFailed that
        came from upstream, whose sender posted it)."""
        if image_id in self.failed:
            return False
        self.failed.add(image_id)
        if announce and self.failures is not None and self.inbox is not None:
            self.failures.post(image_id)
        return True

    def fail(
        self, image_id: int, source: str, reason: str, kind: str, downstream: bool = True
    ) -> None:
        """Mark an image failed here (once) and tell the stages after this one. A reason
        that starts with `source` (a source's own message) loses that prefix: the line shown
        is `source: reason`, and should name the source once. `kind`: the error's class name
        (`error_kind`)."""
        reason = reason.removeprefix(f"{source}: ")
        if self.mark_failed(image_id) and downstream:
            self.put(
                ImageFailed(
                    image_id=image_id, source=source, stage=self.name, reason=reason, kind=kind
                )
            )

    def fail_layer(self, layer: LayerDesc, reason: str, kind: str) -> None:
        """This layer is bad: drop it and fail its image."""
        self.drop(layer)
        self.fail(layer.image_id, self.sources.get(layer.image_id, "?"), reason, kind)

    def drop(self, layer: LayerDesc) -> None:
        """A layer of a failed image: its spool file goes, the message stops here. A layer
        written in place into a tarball stays: the writer disowns its region."""
        if layer.in_source:
            return  # the source's own file, read where it lies: never ours to remove
        if layer.path and layer.offset < 0 and not layer.streaming:  # fetch owns it still
            unlink_quietly(layer.path)

    # -- bugs in worker threads ------------------------------------------------------------

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
                self.fail_layer(layer, str(mapped), mapped.kind)
                return
            self.crashed.append(exc)
            self.fail_layer(
                layer,
                f"internal error in the {self.name} stage: {type(exc).__name__}: {exc}",
                type(exc).__name__,
            )
        except BaseException as exc:
            self.crashed.append(exc)
            self.fail_layer(
                layer,
                f"internal error in the {self.name} stage: {type(exc).__name__}: {exc}",
                type(exc).__name__,
            )

    def raise_crashed(self) -> None:
        if self.crashed:
            raise self.crashed[0]

    # -- the process -----------------------------------------------------------------------

    def main(self) -> NoReturn:
        """The stage process: `run`, then close the outbox (the end of the stream), report,
        and exit without running the atexit handlers the parent's modules registered
        before the fork. A crash is reported (`crash`) and exits 1, leaving the stream
        open: the supervisor stops the run."""
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - reported, then the process ends
            crash(self.control, self.name, exc)
        if self.outbox is not None:
            self.outbox.close()
        report = self.accounting.finish(
            self.inbox.statistics() if self.inbox is not None else None,
            self.outbox.statistics() if self.outbox is not None else None,
        )
        self.tell(report)
        self.control.close()
        os._exit(0)


def crash(control: Sender, stage: str, exc: BaseException) -> NoReturn:
    """Tell the supervisor a stage has crashed, and exit 1: one line for a library's verdict
    on the input or the machine (`errors.from_library`), else (a bug) with the traceback."""
    mapped = from_library(exc, f"the {stage} stage") if isinstance(exc, Exception) else None
    if mapped is not None:
        control.send(StageCrashed(stage=stage, error=str(mapped), traceback=""))
    else:
        control.send(
            StageCrashed(
                stage=stage, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
            )
        )
    control.close()  # the report reaches the supervisor before the exit
    os._exit(1)
