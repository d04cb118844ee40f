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
from occystrap.messages import ImageFailed, ImagePlan, LayerDesc, Shutdown
from occystrap.registry.pool import ClientPool
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
    return os.path.join(spool, f"{layer.image_id}-{layer.digest.split(':', 1)[1]}")


def run(io: StageIO, config: Config, spool: str) -> None:
    clients = ClientPool(config, pool_size=config.parallel * config.image_parallel)
    images: dict[int, _Image] = {}
    busy = _BusyClock()
    lock = threading.Lock()

    def settle(image: _Image) -> None:
        """One layer of `image` is through; when all are, its threads can go."""
        with lock:
            image.remaining -= 1
            done = image.remaining == 0
            if done:
                images.pop(image.plan.image_id, None)
        if done:
            image.pool.shutdown(wait=False)

    def download(image: _Image, layer: LayerDesc) -> None:
        try:
            _download(image, layer)
        finally:
            settle(image)

    def _download(image: _Image, layer: LayerDesc) -> None:
        plan = image.plan
        if layer.image_id in io.failed:
            return
        in_place = layer.offset >= 0
        path = layer.path if in_place else spool_path(spool, layer)
        try:
            client = clients.get(plan.host, plan.insecure)
            with busy:
                got = client.download_blob(plan.name, layer.digest, layer.size, path,
                                           offset=layer.offset if in_place else None)
        except OccystrapError as exc:
            if not in_place:
                unlink_quietly(path)
            io.fail(layer.image_id, plan.source, str(exc))
            return
        if layer.image_id in io.failed:
            if not in_place:
                unlink_quietly(path)
            return
        layer.path = path
        layer.fetched_digest = layer.digest  # download_blob raises unless they match
        layer.fetched_size = got
        io.put(layer)

    try:
        while True:
            msg = io.get()
            if isinstance(msg, Shutdown):
                break
            if isinstance(msg, ImagePlan):
                with lock:
                    images[msg.image_id] = _Image(
                        msg, ThreadPoolExecutor(config.parallel, thread_name_prefix="fetch"),
                        remaining=msg.layer_count)
                io.put(msg)
            elif isinstance(msg, LayerDesc):
                with lock:
                    image = images.get(msg.image_id)
                if msg.image_id in io.failed or image is None:
                    if image is not None:
                        settle(image)
                    continue
                if msg.present:
                    io.put(msg)
                    settle(image)
                    continue
                image.futures.append(image.pool.submit(download, image, msg))
            elif isinstance(msg, ImageFailed):
                io.fail(msg.image_id, msg.source, msg.reason, downstream=False)
                with lock:
                    image = images.pop(msg.image_id, None)
                if image is not None:
                    for fut in image.futures:
                        fut.cancel()
                    image.pool.shutdown(wait=False)
                io.put(msg)
        with lock:
            pending = list(images.values())
        for image in pending:
            image.pool.shutdown(wait=True)
        io.put(Shutdown())
    finally:
        clients.close()
        io.busy_override = busy.total

