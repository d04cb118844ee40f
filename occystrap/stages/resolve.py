"""Resolve: references → plans. Fetches manifests and configs (small, verified), picks the
platform, asks the destination what it already holds, and emits one ImagePlan followed by
its LayerDescs per image. Admits a new image only while fewer than -J are in flight."""

from __future__ import annotations

import hashlib
import itertools
import logging
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.synchronize import Semaphore

from occystrap import mediatypes
from occystrap.config import Config
from occystrap.destinations import Destination, Planner
from occystrap.errors import (
    DestinationError,
    DigestError,
    ManifestError,
    OccystrapError,
    UsageError,
    from_library,
)
from occystrap.layers.cache import Hit, LayerCache
from occystrap.mediatypes import Descriptor, ImageIndex, ImageManifest
from occystrap.messages import ImagePlan, LayerDesc, Notice
from occystrap.reference import DIGEST_RE, ImageRef, Location
from occystrap.registry.clients import ClientPool
from occystrap.sources import (
    Entry,
    ImageSource,
    LocalSource,
    Resolved,
    check_depth,
    is_local,
    open_source,
    platform_manifest,
    serves,
)
from occystrap.sources.registry import RegistryReferrers
from occystrap.stages.base import Stage, Wiring
from occystrap.stages.referrals import Referrals

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
        raise ManifestError(
            f"image config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
    for n, (d, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        if mediatypes.layer_compression(d.media_type) == "none" and d.digest != diff_id:
            raise ManifestError(f"layer {n} is an uncompressed tar with digest {d.digest}, but "
                                f"the config's diff_id is {diff_id}")
    return diff_ids


def check_space(path: str, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise DestinationError(
            f"not enough free space in {path}: need {needed / 2**20:.0f} MiB, "
            f"have {free / 2**20:.0f} MiB")


def layerless_plan(image_id: int, ref: ImageRef, source: str, got: Resolved, insecure: bool,
                   target: ImageRef | None, **extra: object) -> ImagePlan:
    """The plan of something with no layers of its own: an index, or an image the
    destination already has."""
    return ImagePlan(image_id=image_id, source=source, host=ref.host, name=ref.name,
                     insecure=insecure, repo_tag=ref.repo_tag, tag=ref.tag,
                     manifest=got.manifest, manifest_media_type=got.media_type,
                     manifest_digest=got.digest, config=b"", config_digest="",
                     config_media_type="", diff_ids=[], layer_count=0,
                     dest_name=target.name if target else "",
                     dest_tag=target.tag if target else None,
                     **extra)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Job:
    """One top-level image being planned: where it comes from and where it goes."""

    image_id: int
    ref: ImageRef
    text: str  # the source URI as given (the image's own for a pattern), for messages
    source: ImageSource
    insecure: bool
    target: ImageRef | None


def wants_referrers(config: Config, location: Location) -> bool:
    """--referrers, or `?referrers=true` on this source (a mirror spec's `referrers`)."""
    return config.referrers or bool(location.option("referrers", False))


class Resolver:
    """Turns each source into plans, one image at a time (see the module docstring)."""

    def __init__(self, io: Stage, dest: Destination, config: Config, admit: Semaphore,
                 spool: str, planner: Planner | None, cache: LayerCache | None) -> None:
        self.io = io
        self.dest = dest
        self.config = config
        self.admit = admit
        self.spool = spool
        self.planner = planner
        self.cache = cache
        self.clients = ClientPool(config, pool_size=4, role="src")
        self.probe = dest.probe(config)
        self.ids = itertools.count()
        # why an artifact cannot be copied here (and attestations are left out of indexes)
        self.needs_image = dest.image_semantics or config.image_semantics()
        self.pool = ThreadPoolExecutor(max(2, config.parallel), thread_name_prefix="resolve")
        self.discovery = RegistryReferrers()
        self.emitting = threading.Lock()
        self.crashed: list[BaseException] = []
        self.referrals = Referrals(self)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.probe.close()
        self.clients.close()

    def emit(self, plan: ImagePlan, layers: list[LayerDesc]) -> None:
        self.io.put(plan)
        # Largest first: the long downloads start early and the short ones fill in.
        for layer in sorted(layers, key=lambda lay: -lay.size):
            self.io.put(layer)

    def run(self, sources: Sequence[Location]) -> None:
        for location in sources:
            try:
                source, insecure = open_source(
                    location, self.config, self.clients, self.spool,
                    self.discovery if wants_referrers(self.config, location) else None)
                entries = source.entries()
                for text in getattr(source, "notes", ()):  # an archive read around its faults
                    self.io.tell(Notice(source=location.text, text=text, verbose=True))
                split = getattr(source, "platform_entries", None)  # an archive's platforms
                if split and self.config.all_platforms and self.dest.takes_many \
                        and not self.dest.takes_index:
                    entries = split(entries)
                if not (self.dest.takes_many or self.dest.is_registry) and len(entries) > 1 \
                        and len({(e.source, e.reference) for e in entries}) == 1 \
                        and DIGEST_RE.match(entries[0].reference):
                    entries = entries[:1]  # one image under several tags: the first names it
                if len(entries) > 1 and not self.dest.takes_many and not self.dest.is_registry:
                    names = ", ".join(str(e.ref.repo_tag) for e in entries)
                    raise UsageError(f"{location}: holds {len(entries)} images ({names}); "
                                     f"pick one with #NAME:TAG or write to tar:// or oci://")
            except Exception as exc:  # noqa: BLE001 - a library's verdict fails the source
                self.admit.acquire()
                error = _mapped(exc)
                self.io.fail(next(self.ids), location.text, str(error), error.kind)
                continue
            bulk = (len(entries) > 1 or location.pattern is not None or self.config.bulk
                    or location.scheme == "quay")
            # Images of a registry are planned side by side (their HEADs and manifest GETs
            # overlap; admission still bounds them to -J); a tar:// destination is planned
            # one image after another, so its layout does not depend on timing.
            overlap = (not source.local and self.planner is None
                       and self.config.image_parallel > 1)
            images = ThreadPoolExecutor(self.config.image_parallel,
                                        thread_name_prefix="image") if overlap else None
            try:
                for entry in self.shard(entries):
                    self.admit.acquire()  # one slot per image: an index and its children
                    image_id = next(self.ids)
                    # An image of a pattern is named by itself, not by the pattern, so its
                    # result line, its failure and its stats entry say which image it was.
                    text = (f"registry://{entry.ref}" if location.pattern is not None
                            or location.scheme == "quay" else location.text)
                    work = (image_id, text, entry, entry.source, insecure,
                            self.dest.target(entry.ref, bulk), wants_referrers(self.config,
                                                                               location))
                    if images is None:
                        self.plan_one(*work)
                    else:
                        images.submit(self.plan_one, *work)
            finally:
                if images is not None:
                    images.shutdown(wait=True)
            if self.crashed:
                raise self.crashed[0]

    def plan_one(self, image_id: int, text: str, entry: Entry, source: ImageSource,
                 insecure: bool, target: ImageRef | None, referrers: bool) -> None:
        """Plan one image; what fails it is its failure, not the run's. A bug is kept for
        the run to raise once the other images are out."""
        try:
            self.one_image(image_id, text, entry, source, insecure, target, referrers)
        except Exception as exc:  # noqa: BLE001 - fails this image, not the run
            error = _mapped(exc)
            self.io.fail(image_id, text, str(error), error.kind)
        except BaseException as exc:
            self.crashed.append(exc)
            raise

    def shard(self, entries: list[Entry]) -> list[Entry]:
        """--shard K/N: a stable, hash-based share of the images, so N machines can split a
        mirror and together cover it exactly once."""
        if self.config.shard is None:
            return entries
        k, n = self.config.shard
        return [e for e in entries
                if int(hashlib.sha256(str(e.ref).encode()).hexdigest()[:12], 16) % n == k]

    def one_image(self, image_id: int, text: str, entry: Entry, source: ImageSource,
                  insecure: bool, target: ImageRef | None, referrers: bool = False) -> None:
        job = _Job(image_id, entry.ref, text, source, insecure, target)
        got = source.fetch_manifest(entry.reference)  # digest verified
        whole_index = isinstance(got.parsed, ImageIndex) and copies_whole_index(self.config,
                                                                                self.dest)
        if not whole_index and isinstance(got.parsed, ImageIndex):
            got = platform_manifest(source, got, self.config.platform)
        if whole_index and not self.dest.takes_index:
            raise UsageError(f"{self.dest.location}: copying every platform of an index needs "
                             "a registry:// or oci:// destination; pick one with --platform")
        if not self.config.filters and self.probe.up_to_date(target, got.digest):
            # One HEAD, and the whole image is skipped: this is what makes a re-run cheap.
            plans = [(layerless_plan(image_id, job.ref, text, got, insecure, target,
                                     up_to_date=True), [])]
            subjects = self.tree_digests(job, got, 0) if referrers else []
        else:
            plans = self.plan_tree(job, got, parent=-1, depth=0, image_id=image_id)
            subjects = [plan.manifest_digest for plan, _ in plans]
        if referrers:
            plans += self.referrals.plan(job, plans[0][0], subjects)
        with self.emitting:  # an image's plans travel together, parents first
            for plan, layers in plans:
                self.emit(plan, layers)

    def tree_digests(self, job: _Job, got: Resolved, depth: int) -> list[str]:
        """Every manifest digest of an image found up to date, for its referrers: the
        children of an index are listed in it; only nested indexes are fetched."""
        found = [got.digest]
        if isinstance(got.parsed, ImageIndex):
            check_depth(got.digest, depth)
            for d in got.parsed.manifests:
                if d.media_type in mediatypes.INDEX_TYPES:
                    found += self.tree_digests(job, job.source.fetch_manifest(d.digest),
                                               depth + 1)
                else:
                    found.append(d.digest)
        return found

    def plan_tree(self, job: _Job, got: Resolved, parent: int, depth: int,
                  image_id: int | None = None, **extra: object
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
                log.info("%s: leaving out attestation manifest %s (%s needs images)",
                         job.text, d.digest, self.needs_image)
                dropped.append(d.digest)
            else:
                entries.append(d)

        def child(d: Descriptor) -> list[tuple[ImagePlan, list[LayerDesc]]]:
            return self.plan_tree(job, job.source.fetch_manifest(d.digest), my_id, depth + 1)

        if depth == 0 and len(entries) > 1:  # the children's requests overlap
            subtrees = list(self.pool.map(child, entries))
        else:
            subtrees = [child(d) for d in entries]
        index = layerless_plan(my_id, job.ref, job.text, got, job.insecure, job.target,
                               children=[tree[0][0].image_id for tree in subtrees],
                               dropped=dropped, parent=parent, **extra)
        if parent >= 0:
            index.repo_tag = index.tag = None
            index.dest_tag = None
        return [(index, []), *(p for tree in subtrees for p in tree)]

    def plan_image(self, image_id: int, job: _Job, got: Resolved, parent: int = -1,
                   **extra: object) -> tuple[ImagePlan, list[LayerDesc]]:
        """The plan and layers of one manifest `got`: an image, or (registry:// and oci://
        only) an artifact, whose blobs are copied byte-exact and never looked into."""
        config, probe, source, target = self.config, self.probe, job.source, job.target
        parsed = got.parsed
        assert isinstance(parsed, ImageManifest)
        kind = mediatypes.artifact_type(parsed)
        if kind is not None and self.needs_image:
            fix = ("copy it to registry:// or oci://" if self.dest.image_semantics else
                   "without that option it is copied byte-exact")
            raise ManifestError(
                f"{got.digest} is an OCI artifact ({kind}), not a container image: "
                f"{self.needs_image} needs an image; {fix}")
        config_bytes = source.get_blob(parsed.config.digest)
        diff_ids: list[str | None] = list(diff_ids_of(config_bytes, parsed.layers)) \
            if kind is None else [None] * len(parsed.layers)
        layers = []
        needed = 0
        for index, d in enumerate(parsed.layers):
            layer = LayerDesc(image_id=image_id, index=index, digest=d.digest, size=d.size,
                              media_type=d.media_type,
                              compression=mediatypes.layer_compression(d.media_type) or OPAQUE,
                              diff_id=diff_ids[index])
            encoding = config.compression
            if mediatypes.is_foreign(d) and not serves(source, d.digest):
                # As skopeo and crane: the manifest keeps the descriptor, the bytes stay with
                # their publisher; never fetched from `urls` (hosts the user did not name).
                if self.dest.image_semantics:
                    raise ManifestError(f"foreign layer {d.digest} is not served by the "
                                        f"source; {self.dest.image_semantics} needs its bytes")
                layer.present = layer.foreign = True
            elif encoding and layer.compression != encoding:
                # To be re-encoded: it will have another digest at the destination, which
                # only the layer cache may know.
                hit = (self.cache.lookup(d.digest, encoding, config.compression_level)
                       if self.cache and not config.filters else None)
                if hit is not None:
                    self.reuse(layer, hit, encoding, target)
            elif not config.filters:  # filters read every layer
                layer.present = probe.has_layer(d.digest, d.size, target)
            if not layer.present:
                needed += d.size
                if is_local(source):
                    self.locate(layer, source)
            layers.append(layer)
        check_space(self.spool, needed)
        regions = []
        if self.planner is not None:
            regions = self.planner.plan_image(parsed.config.digest, len(config_bytes),
                                              got.digest, len(got.manifest), layers)
        top = parent < 0
        plan = ImagePlan(
            image_id=image_id, source=job.text, host=job.ref.host, name=job.ref.name,
            insecure=job.insecure, repo_tag=job.ref.repo_tag if top else None,
            tag=job.ref.tag if top else None, manifest=got.manifest,
            manifest_media_type=got.media_type, manifest_digest=got.digest,
            config_digest=parsed.config.digest, config_media_type=parsed.config.media_type,
            parent=parent, config=config_bytes,
            diff_ids=[d for d in diff_ids if d is not None], layer_count=len(layers),
            regions=regions, tar_end=self.planner.end if self.planner is not None else -1,
            dest_name=target.name if target else "",
            dest_tag=(target.tag if target else None) if top else None,
            artifact=kind or "", subject=parsed.subject.digest if parsed.subject else "",
            **extra)  # type: ignore[arg-type]
        return plan, layers

    def reuse(self, layer: LayerDesc, hit: Hit, encoding: str, target: ImageRef | None
              ) -> None:
        """A cached re-encoding of this layer: no bytes move when the destination has the
        blob (one HEAD), or, for a registry, another repository of it has (one HEAD there,
        then a mount at write time, in place of a download and a re-encode)."""
        new = hit.descriptor
        mount_from = ""
        if not self.probe.has_layer(new.digest, new.size, target):
            mount_from = next((repo for repo in self.probe.mountable(hit.places, target)
                               if self.probe.blob_in(repo, new.digest)), "")
            if not mount_from:
                return
        layer.source_digest = layer.digest
        layer.digest, layer.size, layer.media_type = new.digest, new.size, new.media_type
        layer.compression, layer.present, layer.mount_from = encoding, True, mount_from

    @staticmethod
    def locate(layer: LayerDesc, source: LocalSource) -> None:
        """Point a layer of a local source at the file that holds its bytes."""
        blob = source.blob_file(layer.digest)
        if blob.digest_seen is not None and blob.digest_seen != layer.digest:
            raise DigestError(f"layer {layer.digest}: the archive's bytes hash to "
                              f"{blob.digest_seen}")
        layer.local_path, layer.local_owned = blob.path, blob.owned


def _mapped(exc: Exception) -> OccystrapError:
    """`exc` as the one-line error it fails an image with; a bug is raised again, to end
    the stage with its traceback."""
    mapped = from_library(exc)
    if mapped is None:
        raise exc
    return mapped


class Resolve(Stage):
    """The resolve stage: no inbox; it plans `sources` one image at a time."""

    def __init__(self, wiring: Wiring, sources: Sequence[Location], dest: Destination,
                 config: Config, admit: Semaphore, spool: str, planner: Planner | None,
                 cache: LayerCache | None) -> None:
        super().__init__(wiring)
        self.plan_sources = list(sources)
        self.resolver = Resolver(self, dest, config, admit, spool, planner, cache)

    def run(self) -> None:
        try:
            self.resolver.run(self.plan_sources)
        finally:
            self.resolver.close()
