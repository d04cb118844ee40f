"""Verify: checks what reached the disk before anything is published.

Fetch hashes every blob as it streams and refuses a digest mismatch on the spot, so its bytes
are not read a second time here by default (that would cost a core-second per GB). Verify
checks that the bytes are there in full: the count fetch wrote and, for a spool file, its
size on disk, against the manifest. With --verify-full it also decompresses each layer and
compares its diff_id with the config, which catches an image whose config and layers disagree.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from occystrap.config import Config
from occystrap.layerio import decompress_file
from occystrap.messages import LayerDesc, Shutdown
from occystrap.stages.base import StageIO


def check_layer(layer: LayerDesc, full: bool) -> str | None:
    """The reason this layer is bad, or None."""
    if layer.fetched_size != layer.size:
        return f"layer {layer.digest}: {layer.fetched_size} bytes, manifest says {layer.size}"
    if layer.offset < 0:
        try:
            on_disk = os.stat(layer.path).st_size
        except OSError as exc:
            return f"layer {layer.digest}: spool file {layer.path}: {exc.strerror}"
        if on_disk != layer.size:
            return f"layer {layer.digest}: spool file holds {on_disk} bytes, expected {layer.size}"
    if full and layer.diff_id:
        try:
            diff_id, _ = decompress_file(layer.path, layer.compression, layer.offset,
                                         layer.size)
        except (ValueError, OSError, EOFError) as exc:
            return f"layer {layer.digest}: cannot decompress: {exc}"
        if diff_id != layer.diff_id:
            return (f"layer {layer.digest}: uncompressed content {diff_id} "
                    f"!= diff_id {layer.diff_id}")
    return None


def run(io: StageIO, config: Config) -> None:
    pool = ThreadPoolExecutor(2, thread_name_prefix="verify") if config.verify_full else None

    def handle(layer: LayerDesc) -> None:
        if layer.image_id in io.failed:
            io.drop(layer)
            return
        reason = None if layer.present else check_layer(layer, config.verify_full)
        if reason:
            io.fail_layer(layer, reason)
        else:
            io.put(layer)

    def on_layer(layer: LayerDesc) -> None:
        if pool is not None and not layer.present:
            pool.submit(io.guard, handle, layer)  # decompression: off the loop, two at a time
        else:
            handle(layer)

    io.relay(on_layer)
    if pool is not None:
        pool.shutdown(wait=True)
    io.raise_crashed()
    io.put(Shutdown())
