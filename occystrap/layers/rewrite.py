"""Manifests and configs for recompressed or filtered images (pure: bytes in, bytes out).

A copy is byte-exact unless the user asks for another compression or a filter that rewrites
layers; then every changed layer gets a new descriptor, the config (for filters) new
diff_ids, the manifest new bytes and a new digest, and an index the new digests of its
children. A zstd layer has no Docker media type, so a Docker manifest that gains one
becomes an OCI manifest (as skopeo does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from occystrap import mediatypes as mt
from occystrap.reference import digest_of


class NewDescriptor(msgspec.Struct, frozen=True):
    digest: str
    size: int
    media_type: str


def layer_media_type(compression: str, oci: bool) -> str:
    if compression == "zstd":
        return mt.OCI_LAYER_ZSTD
    if compression == "gzip":
        return mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP
    return mt.OCI_LAYER


def needs_oci(manifest_media_type: str, compression: str | None) -> bool:
    return manifest_media_type == mt.DOCKER_MANIFEST and compression == "zstd"


def _encode(doc: object) -> tuple[bytes, str]:
    body = json.dumps(doc, indent=3).encode()
    return body, digest_of(body)


def rewrite_config(
    body: bytes, diff_ids: Sequence[str], edit: Callable[[dict[str, Any]], None]
) -> tuple[bytes, str]:
    """New (bytes, digest) of an image config whose layers were rewritten: their diff_ids,
    then whatever `edit` changes (normalised times, say). Compact JSON, keys in the source's
    order, so the same input gives the same bytes."""
    doc = json.loads(body)
    doc.setdefault("rootfs", {"type": "layers"})["diff_ids"] = list(diff_ids)
    edit(doc)
    out = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return out, digest_of(out)


def rewrite_manifest(
    body: bytes,
    media_type: str,
    layers: Sequence[NewDescriptor],
    compression: str | None,
    config: NewDescriptor | None = None,
) -> tuple[bytes, str, str]:
    """New (bytes, media type, digest) with `layers` in place of the manifest's layers (and
    `config` in place of its config)."""
    doc = json.loads(body)
    if len(doc["layers"]) != len(layers):
        raise ValueError("layer count changed")
    if config is not None:
        doc["config"]["digest"], doc["config"]["size"] = config.digest, config.size
    to_oci = needs_oci(media_type, compression)
    if to_oci:
        media_type = mt.OCI_MANIFEST
        doc["mediaType"] = mt.OCI_MANIFEST
        doc["config"]["mediaType"] = mt.OCI_CONFIG
    for entry, new in zip(doc["layers"], layers, strict=True):
        if entry["digest"] != new.digest:
            # They described the old blob: eStargz and zstd:chunked offsets, where a foreign
            # layer could be downloaded.
            entry.pop("annotations", None)
            entry.pop("urls", None)
        entry["digest"] = new.digest
        entry["size"] = new.size
        entry["mediaType"] = (
            mt.OCI_LAYER_GZIP
            if to_oci and new.media_type == mt.DOCKER_LAYER_GZIP
            else new.media_type
        )
    out, digest = _encode(doc)
    return out, media_type, digest


def rewrite_index(
    body: bytes, media_type: str, children: Mapping[str, NewDescriptor], dropped: Sequence[str] = ()
) -> tuple[bytes, str, str]:
    """New (bytes, media type, digest) of an index whose children (old digest → new)
    changed, without the entries whose digests are in `dropped`."""
    doc = json.loads(body)
    to_oci = False
    doc["manifests"] = [entry for entry in doc["manifests"] if entry["digest"] not in dropped]
    for entry in doc["manifests"]:
        new = children.get(entry["digest"])
        if new is not None:
            entry["digest"], entry["size"], entry["mediaType"] = (
                new.digest,
                new.size,
                new.media_type,
            )
            to_oci = to_oci or new.media_type == mt.OCI_MANIFEST
    if to_oci and media_type == mt.DOCKER_MANIFEST_LIST:
        media_type = doc["mediaType"] = mt.OCI_INDEX
    out, digest = _encode(doc)
    return out, media_type, digest


# Docker schema 2 media types and their OCI forms (image-spec media-types.md, "Compatibility
# Matrix"); skopeo's oci: transport converts with the same table.
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
TO_OCI = {
    mt.DOCKER_MANIFEST: mt.OCI_MANIFEST,
    mt.DOCKER_MANIFEST_LIST: mt.OCI_INDEX,
    mt.DOCKER_CONFIG: mt.OCI_CONFIG,
    mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP,
    DOCKER_LAYER_TAR: mt.OCI_LAYER,
    mt.DOCKER_LAYER_FOREIGN: OCI_LAYER_NONDISTRIBUTABLE_GZIP,
}


def to_oci(body: bytes, media_type: str) -> tuple[bytes, str, str]:
    """A Docker schema 2 manifest or manifest list in its OCI form: (bytes, media type,
    digest). Config and layers keep their bytes and digests; only descriptor media types
    change, so the manifest gets new bytes and a new digest. An OCI document comes back as
    it is (same bytes). A list's children must already be in OCI form (their digests are
    the converted ones): ValueError otherwise, and for an unknown layer media type."""
    if media_type not in (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST):
        return body, media_type, digest_of(body)
    doc = json.loads(body)
    doc["mediaType"] = TO_OCI[media_type]
    if media_type == mt.DOCKER_MANIFEST:
        for entry in [doc["config"], *doc["layers"]]:
            if not str(entry["mediaType"]).startswith("application/vnd.oci."):
                try:
                    entry["mediaType"] = TO_OCI[entry["mediaType"]]
                except KeyError:
                    raise ValueError(f"no OCI form for {entry['mediaType']}") from None
    else:
        for entry in doc["manifests"]:
            if entry["mediaType"] in TO_OCI:
                raise ValueError(f"child {entry['digest']} is still Docker-typed")
    out, digest = _encode(doc)
    return out, TO_OCI[media_type], digest
