"""Fetch: streams blobs to spool files, hashing as it reads.

Each image gets its own pool of -j threads, so -J images in flight use up to -j × -J
connections. Finished layers go downstream in completion order; nothing waits for a
particular layer, so a sequential writer downstream can never hold fetch hostage. An image
failed anywhere (here, upstream, or further down: `FailedImages`) has its queued downloads
cancelled and starts no new one; a download already running finishes and is thrown away.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec

from occystrap.config import Config
from occystrap.errors import OccystrapError
from occystrap.files import unlink_quietly
from occystrap.layers.codec import copy_blob
from occystrap.messages import ImageFailed, ImagePlan, LayerDesc
from occystrap.registry.clients import ClientPool
from occystrap.stages.base import Stage, Wiring, error_kind
from occystrap.stages.compress import read_in_source

# Downloads at least this big are announced before their bytes (`LayerDesc.streaming`) when
# the destination uploads while they arrive; a smaller blob is over before it would pay.
STREAM_MIN = 16 * 2**20


class _Image(msgspec.Struct):
    plan: ImagePlan
    pool: ThreadPoolExecutor
    remaining: int = 0
    futures: list[Future[None]] = msgspec.field(default_factory=list)


class _BusyClock:
    """Seconds during which at least one download was running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0
        self.total = 0.0

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = time.monotonic()
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.total += time.monotonic() - self._since


def spool_path(spool: str, layer: LayerDesc) -> str:
    """Per image and position: an image may list one blob twice (old images often repeat
    the empty layer), and each position's file is consumed on its own."""
    return os.path.join(spool, f"{layer.image_id}-{layer.index}-{layer.digest.split(':', 1)[1]}")


class SharedBlobs:
    """In-flight dedup: a blob that several images need is fetched once.

    The first layer to want a digest owns its download; the others wait for it and then
    take its bytes (a hard link to a content-addressed spool file, or a copy from its tarball
    region; nothing when they share that region). If the owner fails, the next waiter
    downloads it itself. The content-addressed links keep each distinct blob on the spool
    disk until the run ends.
    """

    def __init__(self, spool: str) -> None:
        self.spool = spool
        self._lock = threading.Lock()
        # digest → (path, offset) of its bytes; a Future while its owner downloads it (a
        # settled one is replaced by its result: 1.6 KB less a blob over a long mirror)
        self._blobs: dict[str, tuple[str, int] | Future[tuple[str, int]]] = {}

    def take(
        self, layer: LayerDesc, path: str, in_place: bool
    ) -> tuple[int | None, Future[tuple[str, int]] | None]:
        """(bytes, None) when another download provided the blob; else (None, future) for
        the caller to fulfil with `publish` or `withdraw`."""
        while True:
            with self._lock:
                fut = self._blobs.get(layer.digest)
                if fut is None or (
                    isinstance(fut, Future) and fut.done() and fut.exception() is not None
                ):
                    mine: Future[tuple[str, int]] = Future()
                    self._blobs[layer.digest] = mine
                    return None, mine
            if isinstance(fut, tuple):
                source, source_offset = fut
            else:
                try:
                    source, source_offset = fut.result()
                except Exception:  # the owner failed: try again, perhaps as the owner
                    continue
            if in_place:
                if source_offset != layer.offset:
                    copy_blob(
                        source,
                        path,
                        layer.digest,
                        layer.size,
                        layer.offset,
                        verify=False,
                        src_offset=max(source_offset, 0),
                    )
            elif source_offset >= 0:
                copy_blob(
                    source,
                    path,
                    layer.digest,
                    layer.size,
                    None,
                    verify=False,
                    src_offset=source_offset,
                )
            else:
                os.link(source, path)
            return layer.size, None

    def publish(
        self, mine: Future[tuple[str, int]] | None, layer: LayerDesc, path: str, in_place: bool
    ) -> None:
        if mine is None:
            return
        if in_place:
            where = (path, layer.offset)
        else:
            where = (os.path.join(self.spool, f"blob-{layer.digest.split(':', 1)[1]}"), -1)
            try:
                os.link(path, where[0])
            except FileExistsError:
                pass
        mine.set_result(where)
        with self._lock:
            self._blobs[layer.digest] = where

    @staticmethod
    def withdraw(mine: Future[tuple[str, int]] | None, exc: BaseException) -> None:
        if mine is not None and not mine.done():
            mine.set_exception(exc)


def take_local(layer: LayerDesc, path: str, in_place: bool) -> int:
    """A local source's layer into the spool (or its tarball region). Our own spool copy
    (a tar:// source's, hashed as it was read) is hard-linked, no bytes moved; anything
    else (a file of a layout, a member of a tar file read in place) is copied and hashed
    on the way: those files are the user's and may have changed since resolve read them."""
    if layer.local_owned and not in_place:
        os.link(layer.local_path, path)
        return os.path.getsize(path)
    return copy_blob(
        layer.local_path,
        path,
        layer.digest,
        layer.size,
        layer.offset if in_place else None,
        verify=not layer.local_owned,
        src_offset=layer.local_offset,
    )


class Fetch(Stage):
    """The fetch stage (see the module docstring)."""

    watches_failures = True
    tracks_progress = True

    def __init__(
        self,
        wiring: Wiring,
        config: Config,
        spool: str,
        stream: bool = False,
        recodes: bool = False,
        keeps: bool = False,
    ) -> None:
        """`stream`: announce each big download as it starts (a registry destination that
        takes the bytes as they are: it uploads while they arrive). `recodes`: compress
        re-encodes every layer and does nothing else, so a plain layer of a local source is
        handed on where it lies, not copied (compress.read_in_source). `keeps`: the
        destination keeps each downloaded file as it is (renamed into an oci:// layout), so
        its writeback to disk starts as soon as it is verified: measured, the download's
        own CPU is lower than when the pages stay dirty (pipeline.keeps_fetched)."""
        super().__init__(wiring)
        self.config = config
        self.spool = spool
        self.stream = stream
        self.recodes = recodes
        self.keeps = keeps
        self.clients = ClientPool(config, pool_size=config.parallel * config.image_parallel)
        self.images: dict[int, _Image] = {}
        self.busy = _BusyClock()
        self.lock = threading.Lock()
        self.blobs = SharedBlobs(spool)

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.clients.close()
            self.accounting.busy_override = self.busy.total

    def finish(self) -> None:
        with self.lock:
            pending = list(self.images.values())
        for image in pending:
            image.pool.shutdown(wait=True)

    def on_plan(self, plan: ImagePlan) -> None:
        if plan.image_id in self.failed:  # failed further down already
            return
        pool = ThreadPoolExecutor(self.config.parallel, thread_name_prefix="fetch")
        with self.lock:
            self.images[plan.image_id] = _Image(plan, pool, remaining=plan.layer_count)

    def on_layer(self, layer: LayerDesc) -> None:
        with self.lock:
            image = self.images.get(layer.image_id)
        if image is None:  # failed meanwhile
            self.drop(layer)
            return
        if layer.present:
            self.put(layer)
            self.settle(image)
            return
        if read_in_source(layer, self.recodes):
            # compress reads it where it lies and checks every byte (its diff_id).
            layer.path, layer.offset, layer.fetched_size = (
                layer.local_path,
                layer.local_offset,
                layer.size,
            )
            self.put(layer)
            self.settle(image)
            return
        image.futures.append(
            image.pool.submit(self.guard, lambda la: self.download(image, la), layer)
        )

    def on_failed(self, failed: ImageFailed) -> None:
        super().on_failed(failed)
        self.forget(failed.image_id)

    def on_abandoned(self, image_id: int) -> None:
        self.forget(image_id)
        if self.tracker is not None:
            self.tracker.forget(image_id)

    def forget(self, image_id: int) -> None:
        """Stop work on an image: queued downloads are cancelled, its threads let go."""
        with self.lock:
            image = self.images.pop(image_id, None)
        if image is not None:
            for fut in image.futures:
                fut.cancel()
            image.pool.shutdown(wait=False)

    def settle(self, image: _Image) -> None:
        """One layer of `image` is through; when all are, its threads can go."""
        with self.lock:
            image.remaining -= 1
            done = image.remaining == 0
        if done:
            self.forget(image.plan.image_id)

    def abandoned(self, image_id: int) -> bool:
        """The image has failed, here or further down (looked up afresh)."""
        self.learn_failures()
        return image_id in self.failed

    def download(self, image: _Image, layer: LayerDesc) -> None:
        plan = image.plan
        if self.abandoned(layer.image_id):
            return
        in_place = layer.offset >= 0
        path = layer.path if in_place else spool_path(self.spool, layer)
        mine = None
        try:
            with self.busy:
                got, mine = self.blobs.take(layer, path, in_place)
                if got is None:
                    if layer.local_path:
                        got = take_local(layer, path, in_place)
                    else:
                        if self.stream and not in_place and layer.size >= STREAM_MIN:
                            self.put(msgspec.structs.replace(layer, path=path, streaming=True))
                        client = self.clients.get(plan.host, plan.insecure)
                        got = client.download_blob(
                            plan.name,
                            layer.digest,
                            layer.size,
                            path,
                            offset=layer.offset if in_place else None,
                            on_progress=self.accounting.stream(layer),
                            writeback=self.keeps,
                        )
                    self.blobs.publish(mine, layer, path, in_place)
        except OSError as exc:
            self._failed_download(layer, path, in_place, mine, exc)
            self.fail(
                layer.image_id,
                plan.source,
                f"cannot copy {layer.local_path}: {exc}",
                error_kind(exc),
            )
            self.forget(layer.image_id)
            return
        except OccystrapError as exc:
            self._failed_download(layer, path, in_place, mine, exc)
            self.fail(layer.image_id, plan.source, str(exc), exc.kind)
            self.forget(layer.image_id)
            return
        except BaseException as exc:  # a bug: free the waiters, then guard reports it
            self._failed_download(layer, path, in_place, mine, exc)
            self.forget(layer.image_id)
            raise
        if self.abandoned(layer.image_id):
            if not in_place:
                unlink_quietly(path)
            return
        layer.path = path
        layer.fetched_size = got
        self.put(layer)
        self.settle(image)

    def _failed_download(
        self,
        layer: LayerDesc,
        path: str,
        in_place: bool,
        mine: Future[tuple[str, int]] | None,
        exc: BaseException,
    ) -> None:
        """Free the blob's waiters and remove the partial spool file."""
        self.blobs.withdraw(mine, exc)
        if not in_place:
            unlink_quietly(path)
