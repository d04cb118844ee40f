"""Resolve: references → plans. Fetches manifests and configs (small, verified), picks the
platform, asks the destination what it already holds, and emits one ImagePlan followed by
its LayerDescs per image. Admits a new image only while fewer than -J are in flight."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Sequence
from threading import Semaphore

from occystrap import mediatypes
from occystrap.config import Config
from occystrap.destination import Destination
from occystrap.errors import (
    DestinationError,
    DigestError,
    ManifestError,
    OccystrapError,
    UsageError,
)
from occystrap.formats.daemon import Engine, docker_socket
from occystrap.formats.dockerarchive import TarPlanner
from occystrap.layercache import LayerCache
from occystrap.mediatypes import ImageIndex, ImageManifest
from occystrap.messages import ImagePlan, LayerDesc, Shutdown
from occystrap.reference import ImageRef, Location
from occystrap.registry.pool import ClientPool
from occystrap.sources import Entry, Resolved
from occystrap.sources.bulk import RegistryBulkSource
from occystrap.sources.directory import DirectorySource
from occystrap.sources.ocilayout import OCILayoutSource
from occystrap.sources.quay import QuaySource, parse_since
from occystrap.sources.quay import registry_host as quay_registry_host
from occystrap.sources.registry import RegistrySource
from occystrap.sources.tarball import TarballSource
from occystrap.stages.base import StageIO


def copies_whole_index(config: Config, dest: Destination) -> bool:
    """An index is copied whole with --all-platforms, or into a registry when no platform
    was asked for (a mirror should serve every platform the source does)."""
    return config.all_platforms or (dest.is_registry and not config.platform_given)


def diff_ids_of(config_bytes: bytes, layer_count: int) -> list[str]:
    diff_ids = mediatypes.config_diff_ids(config_bytes)
    if len(diff_ids) != layer_count:
        raise ManifestError(
            f"image config lists {len(diff_ids)} diff_ids for {layer_count} layers")
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


Source = (RegistrySource | RegistryBulkSource | QuaySource | OCILayoutSource | DirectorySource
          | TarballSource)


class Resolver:
    """Turns each source into plans, one image at a time (see the module docstring)."""

    def __init__(self, io: StageIO, dest: Destination, config: Config, admit: Semaphore,
                 spool: str, planner: TarPlanner | None, cache: LayerCache | None) -> None:
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

    def close(self) -> None:
        self.probe.close()
        self.clients.close()

    def emit(self, plan: ImagePlan, layers: list[LayerDesc]) -> None:
        self.io.put(plan)
        # Largest first: the long downloads start early and the short ones fill in.
        for layer in sorted(layers, key=lambda lay: -lay.size):
            self.io.put(layer)

    def open(self, location: Location) -> tuple[Source, bool]:
        """The source behind `location`, and whether it is reached over plain HTTP."""
        insecure = location.insecure(self.config.insecure)
        if location.scheme == "quay":
            api = self.config.quay_url
            plain = api.startswith("http://")
            client = self.clients.get(quay_registry_host(api), plain or insecure)
            namespace, _, glob = (location.path or "").partition("/")
            token = location.option("token") or self.config.password
            return QuaySource(api, namespace, glob, location.tag or "latest",
                              parse_since(location.option("since")),
                              str(token) if token else None, client,
                              self.config.parallel), plain or insecure
        if location.scheme == "registry" and location.pattern is not None:
            client = self.clients.get(location.pattern.host, insecure)
            return RegistryBulkSource(client, location.pattern, self.config.parallel), insecure
        if location.scheme == "registry":
            assert location.ref is not None
            client = self.clients.get(location.ref.host, insecure)
            return RegistrySource(client, location.ref), insecure
        path = os.path.abspath(location.path or "")
        if location.scheme == "oci":
            return OCILayoutSource(path, location.tag), False
        if location.scheme == "dir":
            return DirectorySource(path), False
        if location.scheme == "docker":
            engine = Engine(docker_socket(location))
            resp, conn = engine.export(location.path or "")
            try:
                return TarballSource("", None, self.spool, fileobj=resp,  # type: ignore[arg-type]
                                     where=f"docker://{location.path}"), False
            finally:
                conn.close()
        return TarballSource(location.path or "", location.select, self.spool), False

    def run(self, sources: Sequence[Location]) -> None:
        for location in sources:
            try:
                source, insecure = self.open(location)
                entries = source.entries()
                if len(entries) > 1 and not self.dest.takes_many and not self.dest.is_registry:
                    names = ", ".join(str(e.ref.repo_tag) for e in entries)
                    raise UsageError(f"{location}: holds {len(entries)} images ({names}); "
                                     f"pick one with #NAME:TAG or write to tar:// or oci://")
            except OccystrapError as exc:
                self.admit.acquire()
                self.io.fail(next(self.ids), location.text, str(exc))
                continue
            bulk = (len(entries) > 1 or location.pattern is not None or self.config.bulk
                    or location.scheme == "quay")
            for entry in self.shard(entries):
                self.admit.acquire()  # one slot per image: an index and its children share it
                image_id = next(self.ids)
                try:
                    self.one_image(image_id, location.text, entry, entry.source or source,
                                   insecure, self.dest.target(entry.ref, bulk))
                except OccystrapError as exc:
                    self.io.fail(image_id, location.text, str(exc))
        self.io.put(Shutdown())

    def shard(self, entries: list[Entry]) -> list[Entry]:
        """--shard K/N: a stable, hash-based share of the images, so N machines can split a
        mirror and together cover it exactly once."""
        if self.config.shard is None:
            return entries
        k, n = self.config.shard
        return [e for e in entries
                if int(hashlib.sha256(str(e.ref).encode()).hexdigest()[:12], 16) % n == k]

    def one_image(self, image_id: int, text: str, entry: Entry, source: Source,
                  insecure: bool, target: ImageRef | None) -> None:
        ref = entry.ref
        got = source.fetch_manifest(entry.reference)  # digest verified
        whole_index = isinstance(got.parsed, ImageIndex) and copies_whole_index(self.config,
                                                                                self.dest)
        if not whole_index and isinstance(got.parsed, ImageIndex):
            chosen = mediatypes.select_platform(got.parsed, self.config.platform)
            got = source.fetch_manifest(chosen.digest)
            if isinstance(got.parsed, ImageIndex):
                raise ManifestError(f"index {chosen.digest} points at another index")
        if not self.config.filters and self.probe.up_to_date(target, got.digest):
            # One HEAD, and the whole image is skipped: this is what makes a re-run cheap.
            self.emit(layerless_plan(image_id, ref, text, got, insecure, target,
                                     up_to_date=True), [])
            return
        if not whole_index:
            self.emit(*self.plan_image(image_id, ref, text, got, source, insecure, target))
            return
        if not self.dest.takes_index:
            raise UsageError(f"{self.dest.location}: copying every platform of an index needs "
                             "a registry:// or oci:// destination; pick one with --platform")
        assert isinstance(got.parsed, ImageIndex)
        # Resolve every child before sending anything: a child that cannot be planned fails
        # the index before a byte moves.
        children = []
        for d in got.parsed.manifests:
            child = source.fetch_manifest(d.digest)
            if not isinstance(child.parsed, ImageManifest):
                raise ManifestError(f"index {got.digest}: {d.digest} is not an image manifest")
            children.append(self.plan_image(next(self.ids), ref, text, child, source,
                                            insecure, target, parent=image_id))
        self.emit(layerless_plan(image_id, ref, text, got, insecure, target,
                                 children=[plan.image_id for plan, _ in children]), [])
        for plan, layers in children:
            self.emit(plan, layers)

    def plan_image(self, image_id: int, ref: ImageRef, text: str, got: Resolved,
                   source: Source, insecure: bool, target: ImageRef | None, parent: int = -1
                   ) -> tuple[ImagePlan, list[LayerDesc]]:
        """The plan and layers of one single-platform image whose manifest is `got`."""
        config, probe = self.config, self.probe
        parsed = got.parsed
        assert isinstance(parsed, ImageManifest)
        config_bytes = source.get_blob(parsed.config.digest)
        diff_ids = diff_ids_of(config_bytes, len(parsed.layers))
        layers = []
        needed = 0
        for index, d in enumerate(parsed.layers):
            layer = LayerDesc(image_id=image_id, index=index, digest=d.digest, size=d.size,
                              media_type=d.media_type,
                              compression=mediatypes.compression_of(d.media_type),
                              diff_id=diff_ids[index])
            encoding = config.compression
            if encoding and layer.compression != encoding:
                # To be re-encoded: it will have another digest at the destination, which
                # only the layer cache may know.
                hit = (self.cache.lookup(d.digest, encoding, config.compression_level)
                       if self.cache and not config.filters else None)
                if hit is not None and probe.has_layer(hit.digest, hit.size, target):
                    layer.source_digest = d.digest
                    layer.digest, layer.size, layer.media_type = (hit.digest, hit.size,
                                                                  hit.media_type)
                    layer.compression, layer.present = encoding, True
            elif not config.filters:  # filters read every layer
                layer.present = probe.has_layer(d.digest, d.size, target)
            if not layer.present:
                needed += d.size
                if source.local:
                    self.locate(layer, source)
            layers.append(layer)
        check_space(self.spool, needed)
        regions = []
        if self.planner is not None:
            regions = self.planner.plan_image(parsed.config.digest, len(config_bytes),
                                              got.digest, len(got.manifest), layers)
        plan = ImagePlan(
            image_id=image_id, source=text, host=ref.host, name=ref.name, insecure=insecure,
            repo_tag=ref.repo_tag if parent < 0 else None,
            tag=ref.tag if parent < 0 else None, manifest=got.manifest,
            manifest_media_type=got.media_type, manifest_digest=got.digest,
            config_digest=parsed.config.digest, config_media_type=parsed.config.media_type,
            parent=parent, config=config_bytes, diff_ids=diff_ids, layer_count=len(layers),
            regions=regions, tar_end=self.planner.end if self.planner is not None else -1,
            dest_name=target.name if target else "",
            dest_tag=(target.tag if target else None) if parent < 0 else None)
        return plan, layers

    @staticmethod
    def locate(layer: LayerDesc, source: Source) -> None:
        """Point a layer of a local source at the file that holds its bytes."""
        blob = source.blob_file(layer.digest)  # type: ignore[union-attr]
        if blob.digest_seen is not None and blob.digest_seen != layer.digest:
            raise DigestError(f"layer {layer.digest}: the archive's bytes hash to "
                              f"{blob.digest_seen}")
        layer.local_path, layer.local_owned = blob.path, blob.owned


def run(io: StageIO, sources: Sequence[Location], dest: Destination, config: Config,
        admit: Semaphore, spool: str, planner: TarPlanner | None,
        cache: LayerCache | None) -> None:
    resolver = Resolver(io, dest, config, admit, spool, planner, cache)
    try:
        resolver.run(sources)
    finally:
        resolver.close()
