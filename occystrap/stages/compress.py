"""Compress: changes a layer's encoding when the destination needs another one, and runs
the layer filters (`process -f`): both are CPU work on a layer's whole content.

Every layer that needs work (decompressed for `dir://` and `tar://?format=v1.2`,
re-encoded for --compression, filtered) makes one pass through `filters.layer.filter_layer`
into a new spool file, which also checks the config's diff_id (a free full verification).
Otherwise it passes descriptors through untouched. Layers are worked on by one thread per
core: zlib, zstandard and hashlib release the GIL.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import zstandard

from occystrap.filters import FilterChain
from occystrap.filters.layer import filter_layer
from occystrap.formats.base import unlink_quietly
from occystrap.mediatypes import DOCKER_MANIFEST
from occystrap.messages import ImagePlan, LayerDesc, SearchHits, Shutdown
from occystrap.stages.base import StageIO
from occystrap.transform import layer_media_type


def wants_recompression(layer: LayerDesc, target: str | None) -> bool:
    return target is not None and layer.compression != target


def run(io: StageIO, uncompress: bool, target: str | None = None,
        level: int | None = None, chain: FilterChain | None = None) -> None:
    """`uncompress`: the destination stores plain tar layers. `target`: re-encode every layer
    not already in that compression. `chain`: the filters every layer goes through."""
    pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="compress")
    docker_manifest: dict[int, bool] = {}
    # per image, for the search filter's reports: (top-level image, name, tag); small, so a
    # long bulk run can keep them all
    labels: dict[int, tuple[int, str, str]] = {}
    chain = chain or FilterChain()

    def convert(layer: LayerDesc, out: str, verb: str, work: Callable[[], str],
                drop_input: bool = True) -> bool:
        """Write `out` from the layer's spool file with `work` (which returns the diff_id
        it saw), check the diff_id against the config, and drop the old spool file (unless
        the layer goes on in it). False when the layer (and so its image) failed."""
        if layer.image_id in io.failed:
            io.drop(layer)
            return False
        try:
            diff_id = work()
        except (ValueError, OSError, EOFError, zstandard.ZstdError, tarfile.TarError) as exc:
            if out:
                unlink_quietly(out)
            io.fail_layer(layer, f"layer {layer.digest}: cannot {verb}: {exc}")
            return False
        if drop_input:
            io.drop(layer)  # the old spool file is no longer needed
        if layer.diff_id and diff_id != layer.diff_id:
            if out:
                unlink_quietly(out)
            io.fail_layer(layer, f"layer {layer.digest}: uncompressed content {diff_id} "
                                 f"!= diff_id {layer.diff_id}")
            return False
        return True

    def convert_layer(layer: LayerDesc) -> None:
        """One pass over the layer (`filters.layer.filter_layer`): the filters, if any,
        and the encoding the destination wants."""
        encoding = "none" if uncompress else (target or layer.compression)
        # A new blob (new digest) when members change or --compression re-encodes it; a
        # plain tar for dir:// keeps its name, as without filters.
        new_blob = chain.rewrites or (encoding != layer.compression and not uncompress)
        out = f"{layer.path}.filtered" if new_blob or uncompress else None
        made = []

        def work() -> str:
            made.append(filter_layer(layer.path, layer.offset, layer.size, layer.compression,
                                     chain, out, encoding, level))
            return made[0].input_diff_id

        verb = "filter" if chain else "decompress" if uncompress else "recompress"
        if not convert(layer, out or "", verb, work, drop_input=out is not None):
            return
        result = made[0]
        for position, hits in result.hits.items():
            if hits:
                top, name, tag = labels[layer.image_id]
                io.tell(SearchHits(image_id=layer.image_id, top=top, position=position,
                                   name=name, tag=tag, index=layer.index, layer=layer.digest,
                                   hits=hits))
        layer.uncompressed_size = result.plain_size
        if out is not None:
            layer.path, layer.offset = out, -1
        if new_blob:
            oci = not docker_manifest.get(layer.image_id, False) or encoding == "zstd"
            layer.source_digest = layer.digest
            layer.digest, layer.size, layer.diff_id = result.digest, result.size, result.diff_id
            if encoding != layer.compression:
                layer.media_type = layer_media_type(encoding, oci)
        layer.compression = encoding
        io.put(layer)

    def on_plan(plan: ImagePlan) -> None:
        docker_manifest[plan.image_id] = plan.manifest_media_type == DOCKER_MANIFEST
        if chain.searches:
            # A platform of an index is reported under the index's name and tag.
            top, name, tag = labels.get(plan.parent, (plan.image_id, plan.name or "",
                                                      plan.tag or plan.manifest_digest))
            labels[plan.image_id] = (top, name, tag)

    def on_layer(layer: LayerDesc) -> None:
        if layer.present:
            io.put(layer)
        elif chain or uncompress or wants_recompression(layer, target):
            pool.submit(io.guard, convert_layer, layer)
        else:
            io.put(layer)

    io.relay(on_layer, on_plan)
    pool.shutdown(wait=True)
    io.raise_crashed()
    io.put(Shutdown())
