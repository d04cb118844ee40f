"""Resolve: references → plans. Fetches manifests and configs (small, verified), picks the
platform, asks the destination what it already holds, and emits one ImagePlan followed by
its LayerDescs per image. Admits a new image only while fewer than -J are in flight."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from threading import Semaphore

from occystrap import mediatypes
from occystrap.config import Config
from occystrap.destination import Destination
from occystrap.errors import DestinationError, ManifestError, OccystrapError
from occystrap.formats.dockerarchive import TarPlanner
from occystrap.mediatypes import ImageIndex, ImageManifest
from occystrap.messages import ImagePlan, LayerDesc, Shutdown
from occystrap.reference import ImageRef, Location
from occystrap.registry.client import RegistryClient
from occystrap.registry.pool import ClientPool
from occystrap.stages.base import StageIO


def resolve_image(client: RegistryClient, ref: ImageRef, config: Config
                  ) -> tuple[bytes, str, str, ImageManifest]:
    """Manifest bytes, media type, digest and parsed manifest for the wanted platform."""
    resp = client.get_manifest(ref.name, ref.reference, mediatypes.ACCEPT)
    media_type = mediatypes.effective_media_type(resp.media_type, resp.body)
    parsed = mediatypes.parse(resp.body, media_type)
    if isinstance(parsed, ImageIndex):
        chosen = mediatypes.select_platform(parsed, config.platform)
        resp = client.get_manifest(ref.name, chosen.digest, mediatypes.ACCEPT)
        media_type = mediatypes.effective_media_type(resp.media_type, resp.body)
        parsed = mediatypes.parse(resp.body, media_type)
        if isinstance(parsed, ImageIndex):
            raise ManifestError(f"index {chosen.digest} points at another index; not supported")
    return resp.body, media_type, resp.digest, parsed


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


def run(io: StageIO, sources: Sequence[tuple[int, Location]], dest: Destination,
        config: Config, admit: Semaphore, spool: str, planner: TarPlanner | None) -> None:
    clients = ClientPool(config, pool_size=4)
    try:
        for image_id, location in sources:
            admit.acquire()
            ref = location.ref
            assert ref is not None
            source = location.text
            insecure = bool(location.option("insecure", config.insecure))
            try:
                client = clients.get(ref.host, insecure)
                manifest, media_type, digest, parsed = resolve_image(client, ref, config)
                config_bytes = client.get_blob(ref.name, parsed.config.digest)
                diff_ids = diff_ids_of(config_bytes, len(parsed.layers))
                layers = []
                needed = 0
                for index, d in enumerate(parsed.layers):
                    present = dest.has_layer(d.digest, d.size)
                    if not present:
                        needed += d.size
                    layers.append(LayerDesc(
                        image_id=image_id, index=index, digest=d.digest, size=d.size,
                        media_type=d.media_type,
                        compression=mediatypes.compression_of(d.media_type),
                        diff_id=diff_ids[index], present=present))
                check_space(spool, needed)
            except OccystrapError as exc:
                io.fail(image_id, source, str(exc))
                continue
            regions = []
            if planner is not None:
                regions = planner.plan_image(parsed.config.digest, len(config_bytes), digest,
                                             len(manifest), layers)
            io.put(ImagePlan(
                image_id=image_id, source=source, host=ref.host, name=ref.name,
                insecure=insecure,
                repo_tag=ref.repo_tag, tag=ref.tag, manifest=manifest,
                manifest_media_type=media_type, manifest_digest=digest, config=config_bytes,
                config_digest=parsed.config.digest, config_media_type=parsed.config.media_type,
                diff_ids=diff_ids, layer_count=len(layers), regions=regions,
                tar_end=planner.end if planner is not None else -1))
            # Largest first: the long downloads start early and the short ones fill in.
            for layer in sorted(layers, key=lambda lay: -lay.size):
                io.put(layer)
        io.put(Shutdown())
    finally:
        clients.close()
