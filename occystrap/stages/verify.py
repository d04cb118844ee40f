"""Verify: every layer's digest and size against the manifest, and with --verify-full also
its uncompressed diff_id against the config. Fetch hashes inline; verify is the independent
check that what reached the spool is what the manifest names, before anything is written."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from occystrap.config import Config
from occystrap.layerio import decompress_file
from occystrap.messages import ImageFailed, ImagePlan, LayerDesc, Shutdown
from occystrap.stages.base import StageIO


def check_layer(layer: LayerDesc, full: bool) -> str | None:
    """The reason this layer is bad, or None."""
    if layer.fetched_digest != layer.digest:
        return f"layer {layer.digest}: content hashes to {layer.fetched_digest}"
    if layer.fetched_size != layer.size:
        return f"layer {layer.digest}: {layer.fetched_size} bytes, manifest says {layer.size}"
    if full and layer.diff_id:
        try:
            diff_id, _ = decompress_file(layer.path, None, layer.compression, layer.offset,
                                         layer.size)
        except (ValueError, OSError, EOFError) as exc:
            return f"layer {layer.digest}: cannot decompress: {exc}"
        if diff_id != layer.diff_id:
            return (f"layer {layer.digest}: uncompressed content {diff_id} "
                    f"!= diff_id {layer.diff_id}")
    return None


def run(io: StageIO, config: Config) -> None:
    sources: dict[int, str] = {}
    pool = ThreadPoolExecutor(2, thread_name_prefix="verify") if config.verify_full else None

    def handle(layer: LayerDesc) -> None:
        if layer.image_id in io.failed:
            io.drop(layer)
            return
        reason = None if layer.present else check_layer(layer, config.verify_full)
        if reason:
            io.drop(layer)
            io.fail(layer.image_id, sources.get(layer.image_id, "?"), reason)
            return
        io.put(layer)

    while True:
        msg = io.get()
        if isinstance(msg, Shutdown):
            break
        if isinstance(msg, ImagePlan):
            sources[msg.image_id] = msg.source
            io.put(msg)
        elif isinstance(msg, LayerDesc):
            if pool is not None and not msg.present:
                pool.submit(handle, msg)
            else:
                handle(msg)
        elif isinstance(msg, ImageFailed):
            io.fail(msg.image_id, msg.source, msg.reason, downstream=False)
            io.put(msg)
    if pool is not None:
        pool.shutdown(wait=True)
    io.put(Shutdown())
