"""Media types, manifest parsing and platform matching.

Pure: takes bytes and strings, returns typed structures or raises ManifestError/PlatformError.

Manifests are parsed generically (OCI image-spec 1.1 `manifest.md`, `image-index.md`): any
config and layer media type, `artifactType`, `subject`, annotations, zero layers. Whether a
manifest is a container image (something with a root filesystem that tar://, dir:// or a
filter can unpack) or an artifact (a Helm chart, a signature, an SBOM, a buildx attestation)
is a separate question, answered by `artifact_type()`.
"""

from __future__ import annotations

import json
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
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
IMAGE_CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)

# buildx attestation manifests sit in an index beside the image they describe
# (docs.docker.com/build/metadata/attestations/attestation-storage/)
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
SCHEMA1_TYPES = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
ACCEPT = MANIFEST_TYPES + INDEX_TYPES + SCHEMA1_TYPES

MAX_MANIFEST_BYTES = 4 * 2**20
MAX_DESCRIPTOR_SIZE = 2**63 - 1


class Platform(msgspec.Struct, frozen=True, omit_defaults=True):
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class Descriptor(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    """An OCI content descriptor (image-spec `descriptor.md`); `size` in bytes."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] | None = None
    urls: list[str] | None = None
    artifact_type: str | None = None


class _ManifestDoc(msgspec.Struct, rename="camel"):
    schema_version: int
    media_type: str | None = None
    config: Descriptor | None = None
    layers: list[Descriptor] | None = None
    manifests: list[Descriptor] | None = None
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class ImageManifest(msgspec.Struct, frozen=True):
    """A single manifest: an image, or an artifact (see `artifact_type`)."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    artifact_type: str | None = None  # the manifest's own `artifactType` field
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class ImageIndex(msgspec.Struct, frozen=True):
    """An OCI index or Docker manifest list; its entries may be manifests or indexes."""

    media_type: str
    manifests: list[Descriptor]
    artifact_type: str | None = None
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


def layer_compression(media_type: str) -> str | None:
    """`gzip`, `zstd` or `none` for a tar layer media type; None for anything that is not a
    tar layer (an in-toto statement, a signature, a Helm provenance file)."""
    if media_type in (DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN, OCI_LAYER_GZIP):
        return "gzip"
    if media_type.endswith(("+gzip", ".gzip")):
        return "gzip"
    if media_type == OCI_LAYER_ZSTD or media_type.endswith(("+zstd", ".zstd")):
        return "zstd"
    if media_type == OCI_LAYER or media_type.endswith((".tar", "+tar")):
        return "none"
    return None


def compression_of(media_type: str) -> str:
    """`gzip`, `zstd` or `none` for a layer media type; ManifestError for a type that is not
    a tar layer."""
    found = layer_compression(media_type)
    if found is None:
        raise ManifestError(f"unknown layer media type {media_type!r}")
    return found


def artifact_type(manifest: ImageManifest) -> str | None:
    """None when `manifest` is a container image; otherwise what kind of artifact it is, as
    image-spec 1.1 defines it: its `artifactType`, else its config's media type, else (an
    image config over layers that are not tars: a buildx attestation, a cosign signature)
    the first such layer's media type."""
    if manifest.artifact_type:
        return manifest.artifact_type
    if manifest.config.media_type not in IMAGE_CONFIG_TYPES:
        return manifest.config.media_type
    for layer in manifest.layers:
        if layer_compression(layer.media_type) is None:
            return layer.media_type
    return None


def is_attestation(d: Descriptor) -> bool:
    """An index entry that describes another entry rather than being a platform's image:
    a buildx attestation manifest, or any `unknown/unknown` entry."""
    if (d.annotations or {}).get(REFERENCE_TYPE) == ATTESTATION_MANIFEST:
        return True
    return (
        d.platform is not None
        and d.platform.os == "unknown"
        and d.platform.architecture == "unknown"
    )


def is_foreign(d: Descriptor) -> bool:
    """A foreign or non-distributable layer: the registry may not serve it (Windows base
    layers); its `urls` name where its publisher serves it."""
    return bool(d.urls) or "foreign" in d.media_type or "nondistributable" in d.media_type


def referrer_types(manifest: ImageManifest | ImageIndex) -> set[str]:
    """Every type a `--referrers-type` filter may name for this manifest: its artifactType,
    its config's media type and its layers' media types (cosign's companion manifests have
    no artifactType; their layer type says what they are)."""
    found = {manifest.artifact_type} if manifest.artifact_type else set()
    if isinstance(manifest, ImageManifest):
        found.add(manifest.config.media_type)
        found.update(layer.media_type for layer in manifest.layers)
    return found


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
        return str(body_type)
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc:
        return OCI_MANIFEST
    raise ManifestError(f"unknown manifest media type {content_type!r}")


def parse(body: bytes, media_type: str) -> ImageManifest | ImageIndex:
    """A manifest or index, generically: every descriptor's digest and size are checked,
    nothing is assumed about config or layer types. ManifestError when malformed."""
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
        if doc.subject is not None:
            _check_descriptor(doc.subject)
        return ImageIndex(
            media_type, doc.manifests, doc.artifact_type, doc.subject, doc.annotations
        )
    if doc.config is None or doc.layers is None:
        raise ManifestError("malformed manifest: missing 'config' or 'layers'")
    for d in (doc.config, *doc.layers, *([doc.subject] if doc.subject else [])):
        _check_descriptor(d)
    return ImageManifest(
        media_type, doc.config, doc.layers, doc.artifact_type, doc.subject, doc.annotations
    )


def _check_descriptor(d: Descriptor) -> None:
    if not DIGEST_RE.match(d.digest):
        raise ManifestError(f"unsupported or malformed digest {d.digest!r} in manifest")
    if d.size < 0:
        raise ManifestError(f"negative size for {d.digest} in manifest")
    if d.size > MAX_DESCRIPTOR_SIZE:  # image-spec: size is an int64
        raise ManifestError(f"size {d.size} of {d.digest} in manifest does not fit 64 bits")


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
        if is_attestation(d):
            continue  # describes an image; never an image to run
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
        available = ", ".join(
            sorted(
                {str(d.platform) for d in index.manifests if d.platform and not is_attestation(d)}
            )
        )
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
