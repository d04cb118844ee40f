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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from occystrap.files import unlink_quietly
from occystrap.filters import FilterChain
from occystrap.layers.rewrite import layer_media_type
from occystrap.mediatypes import DOCKER_MANIFEST
from occystrap.messages import ImagePlan, LayerDesc, SearchHits
from occystrap.stages.base import Stage, Wiring, error_kind


def wants_recompression(layer: LayerDesc, target: str | None) -> bool:
    return target is not None and layer.compression != target


def read_in_source(layer: LayerDesc, recodes: bool) -> bool:
    """May this layer go from fetch to compress without a spool copy, read where it lies in
    the source's file (a member of a tar file, a blob file of a layout)?

    `recodes`: this run re-encodes every layer and does nothing else to it (--compression,
    no filters, a destination that takes compressed layers), so compress reads each one whole
    and writes a new blob. Only for a plain (uncompressed) layer whose digest is its diff_id:
    then compress's diff_id check over the bytes it reads is the digest check that fetch's
    copy would have made, so a file changed since resolve hashed it still fails the image.
    The file is the user's: nobody unlinks it (`Stage.drop`) and compress writes its new blob
    into the spool, never beside it.
    """
    return (
        recodes
        and bool(layer.local_path)
        and not layer.local_owned
        and layer.offset < 0  # not a region of a tarball being written
        and layer.compression == "none"
        and bool(layer.diff_id)
        and layer.diff_id == layer.digest
    )


class Compress(Stage):
    """The compress stage. `uncompress`: the destination stores plain tar layers. `target`:
    re-encode every layer not already in that compression. `chain`: the filters every
    layer goes through."""

    watches_failures = True

    def __init__(
        self,
        wiring: Wiring,
        uncompress: bool,
        target: str | None = None,
        level: int | None = None,
        chain: FilterChain | None = None,
        spool: str = "",
    ) -> None:
        """`spool`: where a new blob of a layer read in its source's file goes."""
        super().__init__(wiring)
        self.spool = spool
        self.uncompress = uncompress
        self.target = target
        self.level = level
        self.chain = chain or FilterChain()
        self.pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="compress")
        self.docker_manifest: dict[int, bool] = {}
        # per image, for the search filter's reports: (top-level image, name, tag); small,
        # so a long bulk run can keep them all
        self.labels: dict[int, tuple[int, str, str]] = {}

    def convert(
        self,
        layer: LayerDesc,
        out: str,
        verb: str,
        work: Callable[[], str],
        drop_input: bool = True,
    ) -> bool:
        """Write `out` from the layer's spool file with `work` (which returns the diff_id
        it saw), check the diff_id against the config, and drop the old spool file (unless
        the layer goes on in it). False when the layer (and so its image) failed."""
        self.learn_failures()
        if layer.image_id in self.failed:
            self.drop(layer)
            return False
        import tarfile  # with the codecs: only a run that converts layers loads them

        import zstandard

        try:
            diff_id = work()
        except (ValueError, OSError, EOFError, zstandard.ZstdError, tarfile.TarError) as exc:
            if out:
                unlink_quietly(out)
            self.fail_layer(layer, f"layer {layer.digest}: cannot {verb}: {exc}", error_kind(exc))
            return False
        if drop_input:
            self.drop(layer)  # the old spool file is no longer needed
        if layer.diff_id and diff_id != layer.diff_id:
            if out:
                unlink_quietly(out)
            self.fail_layer(
                layer,
                f"layer {layer.digest}: uncompressed content {diff_id} != diff_id {layer.diff_id}",
                "DigestError",
            )
            return False
        return True

    def convert_layer(self, layer: LayerDesc) -> None:
        """One pass over the layer (`filters.layer.filter_layer`): the filters, if any,
        and the encoding the destination wants."""
        chain, uncompress = self.chain, self.uncompress
        encoding = "none" if uncompress else (self.target or layer.compression)
        # A new blob (new digest) when members change or --compression re-encodes it; a
        # plain tar for dir:// keeps its name, as without filters.
        new_blob = chain.rewrites or (encoding != layer.compression and not uncompress)
        # A layer read in its source's file (read_in_source) gets its new blob in the spool.
        base = (
            os.path.join(self.spool, f"{layer.image_id}-{layer.index}")
            if layer.in_source
            else layer.path
        )
        out = f"{base}.filtered" if new_blob or uncompress else None
        made = []
        from occystrap.filters.layer import filter_layer  # the codecs, on first need

        def work() -> str:
            made.append(
                filter_layer(
                    layer.path,
                    layer.offset,
                    layer.size,
                    layer.compression,
                    chain,
                    out,
                    encoding,
                    self.level,
                )
            )
            return made[0].input_diff_id

        verb = "filter" if chain else "decompress" if uncompress else "recompress"
        if not self.convert(layer, out or "", verb, work, drop_input=out is not None):
            return
        result = made[0]
        for position, hits in result.hits.items():
            if hits:
                top, name, tag = self.labels[layer.image_id]
                self.tell(
                    SearchHits(
                        image_id=layer.image_id,
                        top=top,
                        position=position,
                        name=name,
                        tag=tag,
                        index=layer.index,
                        layer=layer.digest,
                        hits=hits,
                    )
                )
        layer.uncompressed_size = result.plain_size
        if out is not None:
            layer.path, layer.offset = out, -1
        if new_blob:
            oci = not self.docker_manifest.get(layer.image_id, False) or encoding == "zstd"
            layer.source_digest = layer.digest
            layer.digest, layer.size, layer.diff_id = result.digest, result.size, result.diff_id
            if encoding != layer.compression:
                layer.media_type = layer_media_type(encoding, oci)
        layer.compression = encoding
        self.put(layer)

    def on_plan(self, plan: ImagePlan) -> None:
        self.docker_manifest[plan.image_id] = plan.manifest_media_type == DOCKER_MANIFEST
        if self.chain.searches:
            # A platform of an index is reported under the index's name and tag.
            top, name, tag = self.labels.get(
                plan.parent, (plan.image_id, plan.name or "", plan.tag or plan.manifest_digest)
            )
            self.labels[plan.image_id] = (top, name, tag)

    def on_layer(self, layer: LayerDesc) -> None:
        if layer.present or layer.streaming:
            self.put(layer)
        elif self.chain or self.uncompress or wants_recompression(layer, self.target):
            self.pool.submit(self.guard, self.convert_layer, layer)
        else:
            self.put(layer)

    def finish(self) -> None:
        self.pool.shutdown(wait=True)
