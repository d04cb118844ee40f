"""Compress: changes a layer's encoding when the destination needs another one.

For `dir://` and `tar://?format=v1.2` it decompresses each layer into a new spool file and
checks the result against the config's diff_id (a free full verification). Otherwise it
passes descriptors through untouched. Layers are decompressed by one thread per core: zlib,
zstandard and hashlib release the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import zstandard

from occystrap.formats.base import unlink_quietly
from occystrap.layerio import decompress_file, recompress_file
from occystrap.mediatypes import DOCKER_MANIFEST
from occystrap.messages import ImagePlan, LayerDesc, Shutdown
from occystrap.stages.base import StageIO
from occystrap.transform import layer_media_type


def wants_recompression(layer: LayerDesc, target: str | None) -> bool:
    return target is not None and layer.compression != target


def run(io: StageIO, uncompress: bool, target: str | None = None,
        level: int | None = None) -> None:
    """`uncompress`: the destination stores plain tar layers. `target`: re-encode every layer
    not already in that compression (the only change to a copy's bytes the user can ask)."""
    pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="compress")
    docker_manifest: dict[int, bool] = {}

    def convert(layer: LayerDesc, out: str, verb: str, work: Callable[[], str]) -> bool:
        """Write `out` from the layer's spool file with `work` (which returns the diff_id
        it saw), check the diff_id against the config, and drop the old spool file. False
        when the layer (and so its image) failed."""
        if layer.image_id in io.failed:
            io.drop(layer)
            return False
        try:
            diff_id = work()
        except (ValueError, OSError, EOFError, zstandard.ZstdError) as exc:
            unlink_quietly(out)
            io.fail_layer(layer, f"layer {layer.digest}: cannot {verb}: {exc}")
            return False
        io.drop(layer)  # the old spool file is no longer needed
        if layer.diff_id and diff_id != layer.diff_id:
            unlink_quietly(out)
            io.fail_layer(layer, f"layer {layer.digest}: uncompressed content {diff_id} "
                                 f"!= diff_id {layer.diff_id}")
            return False
        return True

    def decompress(layer: LayerDesc) -> None:
        out = layer.path + ".tar"
        if convert(layer, out, "decompress",
                   lambda: decompress_file(layer.path, out, layer.compression)[0]):
            layer.path, layer.compression = out, "none"
            io.put(layer)

    def recompress(layer: LayerDesc) -> None:
        assert target is not None
        out = f"{layer.path}.{target}"
        made: list[tuple[str, int]] = []

        def work() -> str:
            digest, size, diff_id = recompress_file(layer.path, out, layer.compression,
                                                    target, level)
            made.append((digest, size))
            return diff_id

        if convert(layer, out, "recompress", work):
            oci = not docker_manifest.get(layer.image_id, False) or target == "zstd"
            layer.source_digest = layer.digest
            (layer.digest, layer.size), layer.path = made[0], out
            layer.compression = target
            layer.media_type = layer_media_type(target, oci)
            layer.offset = -1
            io.put(layer)

    def on_plan(plan: ImagePlan) -> None:
        docker_manifest[plan.image_id] = plan.manifest_media_type == DOCKER_MANIFEST

    def on_layer(layer: LayerDesc) -> None:
        if layer.present:
            io.put(layer)
        elif uncompress:
            pool.submit(decompress, layer)
        elif wants_recompression(layer, target):
            pool.submit(recompress, layer)
        else:
            io.put(layer)

    io.relay(on_layer, on_plan)
    pool.shutdown(wait=True)
    io.put(Shutdown())
