"""Where images come from: a registry, or a tarball, OCI layout or directory on disk.

Every source answers the same three questions, so resolve treats them alike: which images
it holds (`entries`), the manifest for a reference (`fetch_manifest`, digest-verified, as a
`Resolved`), and a small blob's bytes (`get_blob`, verified). Local sources also say where a
layer's bytes already are on disk (`blob_file`), so fetch copies instead of downloading.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from occystrap import mediatypes
from occystrap.errors import DigestError, ManifestError, NotFoundError, PlatformError
from occystrap.mediatypes import ImageIndex, ImageManifest, Platform
from occystrap.reference import ImageRef

MAX_INDEX_DEPTH = 8  # indexes of indexes (containerd, Docker's containerd store) this deep


@dataclass
class Resolved:
    manifest: bytes
    media_type: str
    digest: str
    parsed: ImageManifest | ImageIndex


@dataclass(frozen=True)
class Entry:
    """One image a source offers: how to name it, and what to ask fetch_manifest for (of
    `source` when set: a bulk source hands out one source per repository)."""

    ref: ImageRef
    reference: str
    source: Any = None


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def resolved_from_bytes(body: bytes, media_type_hint: str, where: str,
                        expect: str | None = None) -> Resolved:
    digest = sha256_of(body)
    if expect is not None and digest != expect:
        raise DigestError(f"{where}: manifest {expect} hashes to {digest}")
    media_type = mediatypes.effective_media_type(media_type_hint, body)
    return Resolved(body, media_type, digest, mediatypes.parse(body, media_type))


def check_blob(data: bytes, digest: str, where: str) -> bytes:
    got = sha256_of(data)
    if got != digest:
        raise DigestError(f"{where}: blob {digest} hashes to {got}")
    return data


def check_depth(digest: str, depth: int) -> None:
    """ManifestError when an index sits deeper than MAX_INDEX_DEPTH levels."""
    if depth >= MAX_INDEX_DEPTH:
        raise ManifestError(f"index {digest}: indexes nested more than {MAX_INDEX_DEPTH} "
                            "levels deep; refused")


def serves(source: Any, digest: str) -> bool:
    """Does the source have this blob's bytes (a foreign layer's may be elsewhere)?"""
    has_blob = getattr(source, "has_blob", None)
    if has_blob is not None:
        return bool(has_blob(digest))
    try:
        source.blob_file(digest)
    except NotFoundError:
        return False
    return True


def platform_manifest(source: Any, top: Resolved, wanted: Platform, depth: int = 0) -> Resolved:
    """The image manifest for `wanted` below the index `top`, as docker picks it
    (`mediatypes.select_platform`: attestation entries never count). Entries that are
    indexes themselves (containerd and Docker's containerd image store nest them) are
    searched too, depth first, at most MAX_INDEX_DEPTH levels down.

    PlatformError naming the platforms there are; ManifestError past the depth bound."""
    found = _search_platform(source, top, wanted, depth, set())
    if isinstance(found, Resolved):
        return found
    raise PlatformError(f"no manifest for platform {wanted} (available: "
                        f"{', '.join(sorted(found)) or 'none listed'})")


def _search_platform(source: Any, top: Resolved, wanted: Platform, depth: int,
                     available: set[str]) -> Resolved | set[str]:
    """The manifest, or (not found) the platforms seen on the way, in `available`."""
    check_depth(top.digest, depth)
    index = top.parsed
    assert isinstance(index, ImageIndex)
    nested = [d for d in index.manifests if d.media_type in mediatypes.INDEX_TYPES
              and not mediatypes.is_attestation(d)]
    direct = ImageIndex(index.media_type, [d for d in index.manifests if d not in nested])
    available.update(str(d.platform) for d in direct.manifests
                     if d.platform and not mediatypes.is_attestation(d))
    try:
        chosen = mediatypes.select_platform(direct, wanted)
    except PlatformError:
        pass
    else:
        got: Resolved = source.fetch_manifest(chosen.digest)
        if isinstance(got.parsed, ImageIndex):  # its descriptor said manifest
            return _search_platform(source, got, wanted, depth + 1, available)
        return got
    for d in nested:
        if d.platform is not None and (d.platform.os, d.platform.architecture) != (
                wanted.os, wanted.architecture):
            available.add(str(d.platform))
            continue
        child: Resolved = source.fetch_manifest(d.digest)
        if not isinstance(child.parsed, ImageIndex):
            raise ManifestError(f"index {top.digest}: {d.digest} is listed as an index "
                                f"but is a {child.media_type}")
        found = _search_platform(source, child, wanted, depth + 1, available)
        if isinstance(found, Resolved):
            return found
    return available
