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
from occystrap.layers.codec import decompress_file
from occystrap.messages import LayerDesc
from occystrap.stages.base import Stage, Wiring


def check_layer(layer: LayerDesc, full: bool) -> str | None:
    """The reason this layer is bad, or None."""
    found = check(layer, full)
    return found[0] if found else None


def check(layer: LayerDesc, full: bool) -> tuple[str, str] | None:
    """(reason, kind) when this layer is bad, else None. The kind is the error tree's
    class: DigestError for bytes that disagree with what names them (a short or long blob,
    content whose diff_id is not the config's), ImageError for a spool file that cannot be
    read or a layer that does not decompress."""
    if layer.fetched_size != layer.size:
        return (
            f"layer {layer.digest}: {layer.fetched_size} bytes, manifest says {layer.size}",
            "DigestError",
        )
    if layer.offset < 0:
        try:
            on_disk = os.stat(layer.path).st_size
        except OSError as exc:
            return f"layer {layer.digest}: spool file {layer.path}: {exc.strerror}", "ImageError"
        if on_disk != layer.size:
            return (
                f"layer {layer.digest}: spool file holds {on_disk} bytes, expected {layer.size}",
                "DigestError",
            )
    if full and layer.diff_id:
        try:
            diff_id, _ = decompress_file(layer.path, layer.compression, layer.offset, layer.size)
        except (ValueError, OSError, EOFError) as exc:
            return f"layer {layer.digest}: cannot decompress: {exc}", "ImageError"
        if diff_id != layer.diff_id:
            return (
                f"layer {layer.digest}: uncompressed content {diff_id} != diff_id {layer.diff_id}",
                "DigestError",
            )
    return None


class Verify(Stage):
    """The verify stage (see the module docstring)."""

    watches_failures = True

    def __init__(self, wiring: Wiring, config: Config) -> None:
        super().__init__(wiring)
        self.full = config.verify_full
        # decompression: off the loop, two at a time
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="verify") if self.full else None

    def handle(self, layer: LayerDesc) -> None:
        self.learn_failures()
        if layer.image_id in self.failed:
            self.drop(layer)
            return
        found = None if layer.present else check(layer, self.full)
        if found:
            self.fail_layer(layer, *found)
        else:
            self.put(layer)

    def on_layer(self, layer: LayerDesc) -> None:
        if layer.streaming:  # an announcement: its bytes are checked when they are all in
            self.put(layer)
            return
        if self.pool is not None and not layer.present:
            self.pool.submit(self.guard, self.handle, layer)
        else:
            self.handle(layer)

    def finish(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
