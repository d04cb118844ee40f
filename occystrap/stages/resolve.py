"""Resolve: references → plans. Fetches manifests and configs (small, verified), picks the
platform, asks the destination what it already holds, and emits one ImagePlan followed by
its LayerDescs per image. Admits a new image only while fewer than -J are in flight."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from threading import Semaphore

from occystrap import mediatypes
from occystrap.config import Config
from occystrap.destination import Destination, Probe
from occystrap.errors import (
    DestinationError,
    ManifestError,
    OccystrapError,
    UsageError,
)
from occystrap.formats.dockerarchive import TarPlanner
from occystrap.layercache import LayerCache
from occystrap.mediatypes import ImageIndex, ImageManifest
from occystrap.messages import ImagePlan, LayerDesc, Shutdown
from occystrap.reference import ImageRef, Location
from occystrap.registry.client import RegistryClient
from occystrap.registry.pool import ClientPool
from occystrap.stages.base import StageIO


@dataclass
class Resolved:
    manifest: bytes
    media_type: str
    digest: str
    parsed: ImageManifest | ImageIndex


def fetch_manifest(client: RegistryClient, name: str, reference: str) -> Resolved:
    """A manifest or index, its digest verified when `reference` is one, parsed."""
    resp = client.get_manifest(name, reference, mediatypes.ACCEPT)
    media_type = mediatypes.effective_media_type(resp.media_type, resp.body)
    return Resolved(resp.body, media_type, resp.digest, mediatypes.parse(resp.body, media_type))


def copies_whole_index(config: Config, dest: Destination) -> bool:
    """An index is copied whole with --all-platforms, or into a registry when no platform
    was asked for (a mirror should serve every platform the source does)."""
    return config.all_platforms or (dest.is_registry and not config.platform_given)


def diff_ids_of(config_bytes: bytes, layer_count: int) -> list[str]:
    try:
        doc = json.loads(config_bytes)
        diff_ids = list(doc["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError):
        raise ManifestError("image config has no rootfs.diff_ids") from None
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


def plan_image(image_id: int, ref: ImageRef, source: str, got: Resolved,
               client: RegistryClient, insecure: bool, probe: Probe, config: Config,
               spool: str, planner: TarPlanner | None, cache: LayerCache | None,
               parent: int = -1) -> tuple[ImagePlan, list[LayerDesc]]:
    """The plan and layers of one single-platform image whose manifest is `got`."""
    parsed = got.parsed
    assert isinstance(parsed, ImageManifest)
    common = dict(image_id=image_id, source=source, host=ref.host, name=ref.name,
                  insecure=insecure, repo_tag=ref.repo_tag if parent < 0 else None,
                  tag=ref.tag if parent < 0 else None, manifest=got.manifest,
                  manifest_media_type=got.media_type, manifest_digest=got.digest,
                  config_digest=parsed.config.digest,
                  config_media_type=parsed.config.media_type, parent=parent)
    config_bytes = client.get_blob(ref.name, parsed.config.digest)
    diff_ids = diff_ids_of(config_bytes, len(parsed.layers))
    layers = []
    needed = 0
    for index, d in enumerate(parsed.layers):
        layer = LayerDesc(image_id=image_id, index=index, digest=d.digest, size=d.size,
                          media_type=d.media_type,
                          compression=mediatypes.compression_of(d.media_type),
                          diff_id=diff_ids[index])
        target = config.compression
        if target and layer.compression != target:
            # To be re-encoded: it will have another digest at the destination, which only
            # the layer cache may know.
            hit = cache.lookup(d.digest, target, config.compression_level) if cache else None
            if hit is not None and probe.has_layer(hit.digest, hit.size):
                layer.source_digest = d.digest
                layer.digest, layer.size, layer.media_type = hit.digest, hit.size, \
                    hit.media_type
                layer.compression, layer.present = target, True
        else:
            layer.present = probe.has_layer(d.digest, d.size)
        if not layer.present:
            needed += d.size
        layers.append(layer)
    check_space(spool, needed)
    regions = []
    if planner is not None:
        regions = planner.plan_image(parsed.config.digest, len(config_bytes), got.digest,
                                     len(got.manifest), layers)
    plan = ImagePlan(**common, config=config_bytes, diff_ids=diff_ids, layer_count=len(layers),
                     regions=regions, tar_end=planner.end if planner is not None else -1)
    return plan, layers


def layerless_plan(image_id: int, ref: ImageRef, source: str, got: Resolved, insecure: bool,
                   **extra: object) -> ImagePlan:
    """The plan of something with no layers of its own: an index, or an image the
    destination already has."""
    return ImagePlan(image_id=image_id, source=source, host=ref.host, name=ref.name,
                     insecure=insecure, repo_tag=ref.repo_tag, tag=ref.tag,
                     manifest=got.manifest, manifest_media_type=got.media_type,
                     manifest_digest=got.digest, config=b"", config_digest="",
                     config_media_type="", diff_ids=[], layer_count=0,
                     **extra)  # type: ignore[arg-type]


def run(io: StageIO, sources: Sequence[tuple[int, Location]], dest: Destination,
        config: Config, admit: Semaphore, spool: str, planner: TarPlanner | None,
        cache: LayerCache | None) -> None:
    clients = ClientPool(config, pool_size=4, role="src")
    probe = dest.probe(config)
    child_ids = itertools.count(len(sources))  # children of an index get ids after sources

    def emit(plan: ImagePlan, layers: list[LayerDesc]) -> None:
        io.put(plan)
        # Largest first: the long downloads start early and the short ones fill in.
        for layer in sorted(layers, key=lambda lay: -lay.size):
            io.put(layer)

    def one_source(image_id: int, location: Location) -> None:
        ref = location.ref
        assert ref is not None
        insecure = bool(location.option("insecure", config.insecure))
        client = clients.get(ref.host, insecure)
        got = fetch_manifest(client, ref.name, ref.reference)  # digest verified
        whole_index = isinstance(got.parsed, ImageIndex) and copies_whole_index(config, dest)
        if not whole_index and isinstance(got.parsed, ImageIndex):
            chosen = mediatypes.select_platform(got.parsed, config.platform)
            got = fetch_manifest(client, ref.name, chosen.digest)
            if isinstance(got.parsed, ImageIndex):
                raise ManifestError(f"index {chosen.digest} points at another index")
        dest_ref = dest.location.ref
        if dest_ref is not None and probe.up_to_date(dest_ref.tag or ref.tag or got.digest,
                                                     got.digest):
            # One HEAD, and the whole image is skipped: this is what makes a re-run cheap.
            emit(layerless_plan(image_id, ref, location.text, got, insecure, up_to_date=True),
                 [])
            return
        if not whole_index:
            emit(*plan_image(image_id, ref, location.text, got, client, insecure, probe,
                             config, spool, planner, cache))
            return
        if not dest.takes_index:
            raise UsageError(f"{dest.location}: copying every platform of an index needs a "
                             "registry:// or oci:// destination; pick one with --platform")
        assert isinstance(got.parsed, ImageIndex)
        # Resolve every child before sending anything: a child that cannot be planned fails
        # the index before a byte moves.
        children = []
        for d in got.parsed.manifests:
            child = fetch_manifest(client, ref.name, d.digest)
            if not isinstance(child.parsed, ImageManifest):
                raise ManifestError(f"index {got.digest}: {d.digest} is not an image manifest")
            children.append(plan_image(next(child_ids), ref, location.text, child, client,
                                       insecure, probe, config, spool, planner, cache,
                                       parent=image_id))
        emit(layerless_plan(image_id, ref, location.text, got, insecure,
                            children=[plan.image_id for plan, _ in children]), [])
        for plan, layers in children:
            emit(plan, layers)

    try:
        for image_id, location in sources:
            admit.acquire()  # one slot per source: an index and its children share it
            try:
                one_source(image_id, location)
            except OccystrapError as exc:
                io.fail(image_id, location.text, str(exc))
        io.put(Shutdown())
    finally:
        probe.close()
        clients.close()
