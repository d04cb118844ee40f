"""Media types, manifest parsing and platform matching.

Pure: takes bytes and strings, returns typed structures or raises ManifestError/PlatformError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from occystrap.errors import ManifestError, PlatformError, UsageError
from occystrap.reference import DIGEST_RE

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
SCHEMA1_TYPES = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
ACCEPT = MANIFEST_TYPES + INDEX_TYPES + SCHEMA1_TYPES

MAX_MANIFEST_BYTES = 4 * 2**20


class Platform(msgspec.Struct, frozen=True, omit_defaults=True):
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class Descriptor(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] | None = None
    urls: list[str] | None = None


class _ManifestDoc(msgspec.Struct, rename="camel"):
    schema_version: int
    media_type: str | None = None
    config: Descriptor | None = None
    layers: list[Descriptor] | None = None
    manifests: list[Descriptor] | None = None


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass(frozen=True)
class ImageIndex:
    media_type: str
    manifests: list[Descriptor]


def compression_of(media_type: str) -> str:
    """`gzip`, `zstd` or `none` for a layer media type; unknown layer types raise."""
    if media_type in (DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN, OCI_LAYER_GZIP):
        return "gzip"
    if media_type.endswith(("+gzip", ".gzip")):
        return "gzip"
    if media_type == OCI_LAYER_ZSTD or media_type.endswith(("+zstd", ".zstd")):
        return "zstd"
    if media_type == OCI_LAYER or media_type.endswith((".tar", "+tar")):
        return "none"
    raise ManifestError(f"unknown layer media type {media_type!r}")


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """`raw` as a JSON object, or ManifestError naming `what` (a manifest, an image
    config)."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return doc


def effective_media_type(content_type: str, body: bytes) -> str:
    """The manifest's media type, reconciling Content-Type with the body's `mediaType`.

    The spec says to reject a body whose `mediaType` disagrees with Content-Type; generic
    content types (`application/json`) defer to the body.
    """
    content_type = content_type.split(";", 1)[0].strip().lower()
    doc = json_object(body, "manifest")
    body_type = doc.get("mediaType")
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if body_type and content_type in ACCEPT and body_type != content_type:
        raise ManifestError(
            f"manifest Content-Type {content_type} disagrees with its mediaType {body_type}"
        )
    if content_type in ACCEPT:
        return content_type
    if body_type:
        return body_type
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc:
        return OCI_MANIFEST
    raise ManifestError(f"unknown manifest media type {content_type!r}")


def parse(body: bytes, media_type: str) -> ImageManifest | ImageIndex:
    if media_type in SCHEMA1_TYPES:
        raise ManifestError(
            "Docker schema1 manifests are not supported (deprecated since 2017); "
            "ask the publisher to push a schema2 or OCI image"
        )
    if media_type not in MANIFEST_TYPES + INDEX_TYPES:
        raise ManifestError(f"unknown manifest media type {media_type!r}")
    try:
        doc = msgspec.json.decode(body, type=_ManifestDoc)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"malformed manifest: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    if doc.schema_version != 2:
        raise ManifestError(f"unsupported manifest schemaVersion {doc.schema_version}")
    if media_type in INDEX_TYPES:
        if doc.manifests is None:
            raise ManifestError("malformed index: no 'manifests' list")
        for d in doc.manifests:
            _check_descriptor(d)
        return ImageIndex(media_type, doc.manifests)
    if doc.config is None or doc.layers is None:
        raise ManifestError("malformed manifest: missing 'config' or 'layers'")
    _check_descriptor(doc.config)
    for d in doc.layers:
        _check_descriptor(d)
        compression_of(d.media_type)
        if d.urls:
            raise ManifestError(
                f"layer {d.digest} is a foreign layer (urls={d.urls[0]}); not supported"
            )
    return ImageManifest(media_type, doc.config, doc.layers)


def _check_descriptor(d: Descriptor) -> None:
    if not DIGEST_RE.match(d.digest):
        raise ManifestError(f"unsupported or malformed digest {d.digest!r} in manifest")
    if d.size < 0:
        raise ManifestError(f"negative size for {d.digest} in manifest")


_ARCH_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


def parse_platform(text: str) -> Platform:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def select_platform(index: ImageIndex, wanted: Platform) -> Descriptor:
    """Pick the manifest for `wanted` the way docker does.

    An unspecified variant matches any variant of the architecture, preferring the
    architecture's default (arm64 → v8) and then an entry with no variant at all, so
    `linux/arm64` finds an entry that says `arm64/v8`.
    """
    candidates: list[tuple[int, Descriptor]] = []
    default_variant = _ARCH_DEFAULT_VARIANT.get(wanted.architecture)
    for d in index.manifests:
        p = d.platform
        if p is None or p.os != wanted.os or p.architecture != wanted.architecture:
            continue
        if wanted.variant is not None:
            want = wanted.variant
            have = p.variant or default_variant
            if have == want:
                candidates.append((0, d))
            continue
        if p.variant is None:
            rank = 0 if default_variant is None else 1
        elif p.variant == default_variant:
            rank = 0
        else:
            rank = 2
        candidates.append((rank, d))
    if not candidates:
        available = ", ".join(sorted({str(d.platform) for d in index.manifests if d.platform}))
        raise PlatformError(
            f"no manifest for platform {wanted} (available: {available or 'none listed'})"
        )
    candidates.sort(key=lambda c: c[0])
    return candidates[0][1]


def config_diff_ids(config: bytes, where: str | None = None) -> list[str]:
    """`rootfs.diff_ids` of an image config: the uncompressed digest of each layer."""
    try:
        return list(json.loads(config)["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError):
        prefix = f"{where}: " if where else ""
        raise ManifestError(f"{prefix}image config has no rootfs.diff_ids") from None
