"""Compress: changes a layer's encoding when the destination needs another one.

For `dir://` and `tar://?format=v1.2` it decompresses each layer into a new spool file and
checks the result against the config's diff_id (a free full verification). Otherwise it
passes descriptors through untouched. Layers are decompressed by one thread per core: zlib,
zstandard and hashlib release the GIL.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from occystrap.formats.base import unlink_quietly
from occystrap.layerio import decompress_file
from occystrap.messages import LayerDesc, Shutdown
from occystrap.stages.base import StageIO


def run(io: StageIO, uncompress: bool) -> None:
    pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="compress")

    def decompress(layer: LayerDesc) -> None:
        if layer.image_id in io.failed:
            io.drop(layer)
            return
        out = layer.path + ".tar"
        try:
            diff_id, _ = decompress_file(layer.path, out, layer.compression)
        except (ValueError, OSError, EOFError) as exc:
            unlink_quietly(out)
            io.fail_layer(layer, f"layer {layer.digest}: cannot decompress: {exc}")
            return
        io.drop(layer)  # the compressed spool file is no longer needed
        if layer.diff_id and diff_id != layer.diff_id:
            unlink_quietly(out)
            io.fail_layer(layer, f"layer {layer.digest}: uncompressed content {diff_id} "
                                 f"!= diff_id {layer.diff_id}")
            return
        layer.path = out
        layer.compression = "none"
        layer.diff_id = diff_id
        io.put(layer)

    def on_layer(layer: LayerDesc) -> None:
        if uncompress and not layer.present:
            pool.submit(decompress, layer)
        else:
            io.put(layer)

    io.relay(on_layer)
    pool.shutdown(wait=True)
    io.put(Shutdown())
