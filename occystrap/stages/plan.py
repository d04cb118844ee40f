"""Resolve's planning of one top-level image: its tree (an index, its children, nested
indexes), each image's plan and layers, and what the destination or the layer cache already
has. Everything a tree needs is fetched before anything is sent: a child that cannot be
planned fails the whole image before a byte moves. `stages/resolve.py` opens the sources,
admits images and sends the plans; `stages/referrals.py` plans referrers with this.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from occystrap import mediatypes
from occystrap.config import Config
from occystrap.destinations import Destination, Planner
from occystrap.errors import DestinationError, ManifestError
from occystrap.layers.cache import Hit, LayerCache
from occystrap.mediatypes import Descriptor, ImageIndex, ImageManifest
from occystrap.messages import ImagePlan, LayerDesc
from occystrap.reference import ImageRef
from occystrap.sources import (
    ImageSource,
    LocalSource,
    Resolved,
    check_depth,
    is_local,
    local_blob,
    serves,
)

log = logging.getLogger(__name__)

# The `compression` of an artifact's blob that is not a tar layer: never decompressed.
OPAQUE = "opaque"


def copies_whole_index(config: Config, dest: Destination) -> bool:
    """An index is copied whole with --all-platforms, or into a registry when no platform
    was asked for (a mirror should serve every platform the source does)."""
    return config.all_platforms or (dest.is_registry and not config.platform_given)


def diff_ids_of(config_bytes: bytes, layers: list[mediatypes.Descriptor]) -> list[str]:
    """The config's diff_ids, one per layer; an uncompressed layer's digest must be its
    diff_id (a free check of the invariant that every layer matches the config)."""
    diff_ids = mediatypes.config_diff_ids(config_bytes)
    if len(diff_ids) != len(layers):
        raise ManifestError(f"image config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
    for n, (d, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        if mediatypes.layer_compression(d.media_type) == "none" and d.digest != diff_id:
            raise ManifestError(
                f"layer {n} is an uncompressed tar with digest {d.digest}, but "
                f"the config's diff_id is {diff_id}"
            )
    return diff_ids


def check_space(path: str, needed: int) -> None:
    """DestinationError when `path`'s filesystem has fewer than `needed` bytes free."""
    free = shutil.disk_usage(path).free
    if free < needed:
        raise DestinationError(
            f"not enough free space in {path}: need {needed / 2**20:.0f} MiB, "
            f"have {free / 2**20:.0f} MiB"
        )


def layerless_plan(
    image_id: int,
    ref: ImageRef,
    source: str,
    got: Resolved,
    insecure: bool,
    target: ImageRef | None,
    **extra: Any,
) -> ImagePlan:
    """The plan of something with no layers of its own: an index, or an image the
    destination already has."""
    return ImagePlan(
        image_id=image_id,
        source=source,
        host=ref.host,
        name=ref.name,
        insecure=insecure,
        repo_tag=ref.repo_tag,
        tag=ref.tag,
        manifest=got.manifest,
        manifest_media_type=got.media_type,
        manifest_digest=got.digest,
        config=b"",
        config_digest="",
        config_media_type="",
        diff_ids=[],
        layer_count=0,
        dest_name=target.name if target else "",
        dest_tag=target.tag if target else None,
        **extra,
    )


class Job(msgspec.Struct, frozen=True):
    """One top-level image being planned: where it comes from and where it goes."""

    image_id: int
    ref: ImageRef
    text: str  # the source URI as given (the image's own for a pattern), for messages
    source: ImageSource
    insecure: bool
    target: ImageRef | None


class TreePlanner:
    """Plans image trees for resolve: owns the destination probe (asked whether manifests
    and layers are there already) and the threads that fetch an index's children at once.
    `ids` numbers every plan of the run."""

    def __init__(
        self,
        dest: Destination,
        config: Config,
        spool: str,
        planner: Planner | None,
        cache: LayerCache | None,
        ids: itertools.count[int],
    ) -> None:
        self.dest = dest
        self.config = config
        self.spool = spool
        self.planner = planner
        self.cache = cache
        self.ids = ids
        self.probe = dest.probe(config)
        # why an artifact cannot be copied here (and attestations are left out of indexes)
        self.needs_image = dest.image_semantics or config.image_semantics()
        self.pool = ThreadPoolExecutor(max(2, config.parallel), thread_name_prefix="resolve")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.probe.close()

    def tree_digests(self, job: Job, got: Resolved, depth: int) -> list[str]:
        """Every manifest digest of an image found up to date, for its referrers: the
        children of an index are listed in it; only nested indexes are fetched."""
        found = [got.digest]
        if isinstance(got.parsed, ImageIndex):
            check_depth(got.digest, depth)
            for d in got.parsed.manifests:
                if d.media_type in mediatypes.INDEX_TYPES:
                    found += self.tree_digests(job, job.source.fetch_manifest(d.digest), depth + 1)
                else:
                    found.append(d.digest)
        return found

    def plan_tree(
        self,
        job: Job,
        got: Resolved,
        parent: int,
        depth: int,
        image_id: int | None = None,
        **extra: Any,
    ) -> list[tuple[ImagePlan, list[LayerDesc]]]:
        """Plans for `got` and, for an index, everything below it (parents before their
        children, as the write stage needs them). Every manifest is fetched before anything
        is sent: a child that cannot be planned fails the whole image before a byte moves."""
        my_id = next(self.ids) if image_id is None else image_id
        if not isinstance(got.parsed, ImageIndex):
            return [self.plan_image(my_id, job, got, parent, **extra)]
        check_depth(got.digest, depth)
        entries, dropped = [], []
        for d in got.parsed.manifests:
            if self.needs_image and mediatypes.is_attestation(d):
                log.info(
                    "%s: leaving out attestation manifest %s (%s needs images)",
                    job.text,
                    d.digest,
                    self.needs_image,
                )
                dropped.append(d.digest)
            else:
                entries.append(d)

        def child(d: Descriptor) -> list[tuple[ImagePlan, list[LayerDesc]]]:
            return self.plan_tree(job, job.source.fetch_manifest(d.digest), my_id, depth + 1)

        if depth == 0 and len(entries) > 1:  # the children's requests overlap
            subtrees = list(self.pool.map(child, entries))
        else:
            subtrees = [child(d) for d in entries]
        index = layerless_plan(
            my_id,
            job.ref,
            job.text,
            got,
            job.insecure,
            job.target,
            children=[tree[0][0].image_id for tree in subtrees],
            dropped=dropped,
            parent=parent,
            **extra,
        )
        if parent >= 0:
            index.repo_tag = index.tag = None
            index.dest_tag = None
        return [(index, []), *(p for tree in subtrees for p in tree)]

    def plan_image(
        self, image_id: int, job: Job, got: Resolved, parent: int = -1, **extra: Any
    ) -> tuple[ImagePlan, list[LayerDesc]]:
        """The plan and layers of one manifest `got`: an image, or (registry:// and oci://
        only) an artifact, whose blobs are copied byte-exact and never looked into."""
        config, probe, source, target = self.config, self.probe, job.source, job.target
        parsed = got.parsed
        assert isinstance(parsed, ImageManifest)
        kind = mediatypes.artifact_type(parsed)
        if kind is not None and self.needs_image:
            fix = (
                "copy it to registry:// or oci://"
                if self.dest.image_semantics
                else "without that option it is copied byte-exact"
            )
            raise ManifestError(
                f"{got.digest} is an OCI artifact ({kind}), not a container image: "
                f"{self.needs_image} needs an image; {fix}"
            )
        config_bytes = source.get_blob(parsed.config.digest)
        diff_ids: list[str | None] = (
            list(diff_ids_of(config_bytes, parsed.layers))
            if kind is None
            else [None] * len(parsed.layers)
        )
        layers = []
        needed = 0
        missing = 0  # layers a HEAD at the destination did not find (see config_new)
        for index, d in enumerate(parsed.layers):
            layer = LayerDesc(
                image_id=image_id,
                index=index,
                digest=d.digest,
                size=d.size,
                media_type=d.media_type,
                compression=mediatypes.layer_compression(d.media_type) or OPAQUE,
                diff_id=diff_ids[index],
            )
            encoding = config.compression
            if mediatypes.is_foreign(d) and not serves(source, d.digest):
                # As skopeo and crane: the manifest keeps the descriptor, the bytes stay with
                # their publisher; never fetched from `urls` (hosts the user did not name).
                if self.dest.image_semantics:
                    raise ManifestError(
                        f"foreign layer {d.digest} is not served by the "
                        f"source; {self.dest.image_semantics} needs its bytes"
                    )
                layer.present = layer.foreign = True
            elif encoding and layer.compression != encoding:
                # To be re-encoded: it will have another digest at the destination, which
                # only the layer cache may know.
                hit = (
                    self.cache.lookup(d.digest, encoding, config.compression_level)
                    if self.cache and not config.filters
                    else None
                )
                if hit is not None:
                    self.reuse(layer, hit, encoding, target)
            elif not config.filters:  # filters read every layer
                state = probe.blob_state(d.digest, d.size, target)
                layer.present, layer.assumed = state == "present", state == "sending"
                missing += state == "missing"
            if not layer.present:
                needed += d.size
                if is_local(source):
                    self.locate(layer, source)
            layers.append(layer)
        check_space(self.spool, needed)
        regions = []
        if self.planner is not None:
            regions = self.planner.plan_image(
                parsed.config.digest, len(config_bytes), got.digest, len(got.manifest), layers
            )
        top = parent < 0
        plan = ImagePlan(
            image_id=image_id,
            source=job.text,
            host=job.ref.host,
            name=job.ref.name,
            insecure=job.insecure,
            repo_tag=job.ref.repo_tag if top else None,
            tag=job.ref.tag if top else None,
            manifest=got.manifest,
            manifest_media_type=got.media_type,
            manifest_digest=got.digest,
            config_digest=parsed.config.digest,
            config_media_type=parsed.config.media_type,
            parent=parent,
            config=config_bytes,
            diff_ids=[d for d in diff_ids if d is not None],
            layer_count=len(layers),
            regions=regions,
            tar_end=self.planner.end if self.planner is not None else -1,
            dest_name=target.name if target else "",
            dest_tag=(target.tag if target else None) if top else None,
            artifact=kind or "",
            subject=parsed.subject.digest if parsed.subject else "",
            # No layer is there and a HEAD in this repository said so for one at least: a
            # new image at the destination, whose config (made with its layers) is new too.
            # Write then uploads it without a HEAD, which would say 404. A layer found there
            # (a re-tag, a rebuild on the same base), or none asked about here (each being
            # sent to another repository: a re-tag into another one), keeps the HEAD.
            config_new=missing > 0 and not any(la.present for la in layers),
            **extra,
        )
        return plan, layers

    def reuse(self, layer: LayerDesc, hit: Hit, encoding: str, target: ImageRef | None) -> None:
        """A cached re-encoding of this layer: no bytes move when the destination has the
        blob (one HEAD), or, for a registry, another repository of it has (one HEAD there,
        then a mount at write time, in place of a download and a re-encode)."""
        new = hit.descriptor
        mount_from = ""
        if not self.probe.has_layer(new.digest, new.size, target):
            mount_from = next(
                (
                    repo
                    for repo in self.probe.mountable(hit.places, target)
                    if self.probe.blob_in(repo, new.digest)
                ),
                "",
            )
            if not mount_from:
                return
        layer.source_digest = layer.digest
        layer.digest, layer.size, layer.media_type = new.digest, new.size, new.media_type
        layer.compression, layer.present, layer.mount_from = encoding, True, mount_from

    @staticmethod
    def locate(layer: LayerDesc, source: LocalSource) -> None:
        """Point a layer of a local source at the file that holds its bytes."""
        blob = local_blob(source, layer.digest, layer.size)
        layer.local_path, layer.local_owned = blob.path, blob.owned
        layer.local_offset = blob.offset
