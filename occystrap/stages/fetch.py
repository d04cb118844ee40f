"""Fetch: streams blobs to spool files, hashing as it reads.

Each image gets its own pool of -j threads, so -J images in flight use up to -j × -J
connections. Finished layers go downstream in completion order; nothing waits for a
particular layer, so a sequential writer downstream can never hold fetch hostage.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from occystrap.config import Config
from occystrap.errors import OccystrapError
from occystrap.formats.base import unlink_quietly
from occystrap.layerio import copy_blob
from occystrap.messages import ImagePlan, LayerDesc, Shutdown
from occystrap.registry.clients import ClientPool
from occystrap.stages.base import StageIO


@dataclass
class _Image:
    plan: ImagePlan
    pool: ThreadPoolExecutor
    remaining: int = 0
    futures: list[Future[None]] = field(default_factory=list)


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
        self._blobs: dict[str, Future[tuple[str, int]]] = {}

    def take(self, layer: LayerDesc, path: str, in_place: bool
             ) -> tuple[int | None, Future[tuple[str, int]] | None]:
        """(bytes, None) when another download provided the blob; else (None, future) for
        the caller to fulfil with `publish` or `withdraw`."""
        while True:
            with self._lock:
                fut = self._blobs.get(layer.digest)
                if fut is None or (fut.done() and fut.exception() is not None):
                    self._blobs[layer.digest] = mine = Future()
                    return None, mine
            try:
                source, source_offset = fut.result()
            except Exception:  # the owner failed: try again, perhaps as the owner
                continue
            if in_place:
                if source_offset != layer.offset:
                    copy_blob(source, path, layer.digest, layer.size, layer.offset,
                              verify=False, src_offset=max(source_offset, 0))
            elif source_offset >= 0:
                copy_blob(source, path, layer.digest, layer.size, None, verify=False,
                          src_offset=source_offset)
            else:
                os.link(source, path)
            return layer.size, None

    def publish(self, mine: Future[tuple[str, int]] | None, layer: LayerDesc, path: str,
                in_place: bool) -> None:
        if mine is None:
            return
        if in_place:
            mine.set_result((path, layer.offset))
            return
        shared = os.path.join(self.spool, f"blob-{layer.digest.split(':', 1)[1]}")
        try:
            os.link(path, shared)
        except FileExistsError:
            pass
        mine.set_result((shared, -1))

    @staticmethod
    def withdraw(mine: Future[tuple[str, int]] | None, exc: BaseException) -> None:
        if mine is not None and not mine.done():
            mine.set_exception(exc)


def take_local(layer: LayerDesc, path: str, in_place: bool) -> int:
    """A local source's layer into the spool (or its tarball region). Our own spool copy
    (a tar:// source's, hashed as it was read) is hard-linked, no bytes moved; anything
    else is copied and hashed on the way."""
    if layer.local_owned and not in_place:
        os.link(layer.local_path, path)
        return os.path.getsize(path)
    return copy_blob(layer.local_path, path, layer.digest, layer.size,
                     layer.offset if in_place else None, verify=not layer.local_owned)


def run(io: StageIO, config: Config, spool: str) -> None:
    clients = ClientPool(config, pool_size=config.parallel * config.image_parallel)
    images: dict[int, _Image] = {}
    busy = _BusyClock()
    lock = threading.Lock()
    blobs = SharedBlobs(spool)

    def forget(image_id: int) -> None:
        """Stop work on an image: queued downloads are cancelled, its threads let go."""
        with lock:
            image = images.pop(image_id, None)
        if image is not None:
            for fut in image.futures:
                fut.cancel()
            image.pool.shutdown(wait=False)

    def settle(image: _Image) -> None:
        """One layer of `image` is through; when all are, its threads can go."""
        with lock:
            image.remaining -= 1
            done = image.remaining == 0
        if done:
            forget(image.plan.image_id)

    def download(image: _Image, layer: LayerDesc) -> None:
        plan = image.plan
        if layer.image_id in io.failed:
            return
        in_place = layer.offset >= 0
        path = layer.path if in_place else spool_path(spool, layer)
        mine = None
        try:
            with busy:
                got, mine = blobs.take(layer, path, in_place)
                if got is None:
                    if layer.local_path:
                        got = take_local(layer, path, in_place)
                    else:
                        client = clients.get(plan.host, plan.insecure)
                        got = client.download_blob(plan.name, layer.digest, layer.size, path,
                                                   offset=layer.offset if in_place else None,
                                                   on_progress=io.progress_for(layer))
                    blobs.publish(mine, layer, path, in_place)
        except OSError as exc:
            blobs.withdraw(mine, exc)
            if not in_place:
                unlink_quietly(path)
            io.fail(layer.image_id, plan.source, f"cannot copy {layer.local_path}: {exc}")
            forget(layer.image_id)
            return
        except OccystrapError as exc:
            blobs.withdraw(mine, exc)
            if not in_place:
                unlink_quietly(path)
            io.fail(layer.image_id, plan.source, str(exc))
            forget(layer.image_id)
            return
        except BaseException as exc:  # a bug: free the waiters, then io.guard reports it
            blobs.withdraw(mine, exc)
            if not in_place:
                unlink_quietly(path)
            forget(layer.image_id)
            raise
        if layer.image_id in io.failed:
            if not in_place:
                unlink_quietly(path)
            return
        layer.path = path
        layer.fetched_size = got
        io.put(layer)
        settle(image)

    def on_plan(plan: ImagePlan) -> None:
        pool = ThreadPoolExecutor(config.parallel, thread_name_prefix="fetch")
        with lock:
            images[plan.image_id] = _Image(plan, pool, remaining=plan.layer_count)

    def on_layer(layer: LayerDesc) -> None:
        with lock:
            image = images.get(layer.image_id)
        if image is None:  # failed meanwhile
            io.drop(layer)
            return
        if layer.present:
            io.put(layer)
            settle(image)
            return
        image.futures.append(image.pool.submit(io.guard, lambda la: download(image, la), layer))

    try:
        io.relay(on_layer, on_plan, lambda failed: forget(failed.image_id))
        with lock:
            pending = list(images.values())
        for image in pending:
            image.pool.shutdown(wait=True)
        io.raise_crashed()
        io.put(Shutdown())
    finally:
        clients.close()
        io.busy_override = busy.total
