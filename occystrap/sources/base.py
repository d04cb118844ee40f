"""What every source is: the `Source` protocols, the answers sources give (`Entry`,
`Resolved`, `BlobFile`), and the pure helpers they share (digest checks, the platform
search through nested indexes).

Every source answers the same questions, so resolve treats them alike: which images it
holds (`entries`), the manifest for a reference (`fetch_manifest`, digest-verified, as a
`Resolved`), and a small blob's bytes (`get_blob`, verified). Local sources also say where a
layer's bytes already are on disk (`blob_file`), so fetch copies instead of downloading.
A bulk source (a catalog glob, a `quay://` namespace) only lists entries: each entry names
the image source that serves it.

Here rather than in `sources/__init__.py`, which imports every source to open them: each
source imports this module, so the package has no import cycle.
"""

from __future__ import annotations

from typing import Protocol, TypeGuard

import msgspec

from occystrap import mediatypes
from occystrap.errors import DigestError, ManifestError, NotFoundError, PlatformError
from occystrap.mediatypes import ImageIndex, ImageManifest, Platform
from occystrap.reference import ImageRef, digest_of

MAX_INDEX_DEPTH = 8  # indexes of indexes (containerd, Docker's containerd store) this deep


class Resolved(msgspec.Struct):
    """A manifest or index as fetched: its bytes, media type, digest and parsed form."""

    manifest: bytes
    media_type: str
    digest: str
    parsed: ImageManifest | ImageIndex


class BlobFile(msgspec.Struct, frozen=True):
    """Where a local source holds a blob's bytes."""

    path: str
    owned: bool  # our own spool copy: may be moved instead of copied
    digest_seen: str | None = None  # the sha256 measured when it was spooled or indexed
    # a region of `path` (a member of an uncompressed tar archive, read in place): bytes
    # [offset, offset + size); size -1 is the whole file
    offset: int = 0
    size: int = -1


class Entry(msgspec.Struct, frozen=True):
    """One image a source offers: how to name it, what to ask `source.fetch_manifest` for,
    and the image source that serves it (the source itself, or for a bulk source one per
    repository)."""

    ref: ImageRef
    reference: str
    source: ImageSource
    # named without asking whether it exists (a bulk pattern's literal tag, its tag lists
    # not read): a 404 for its manifest means the repository has no such tag, which skips
    # the image quietly, as if a tag list had been read (stages/resolve.py)
    optional: bool = False


class Source(Protocol):
    """An opened source (`sources.open_source`): the images it holds.

    Optional, looked up with getattr where used: `notes` (what an archive read around its
    faults says, shown with -v), `platform_entries(entries)` (an archive's index split into
    its platforms), `has_blob(digest)` and `find_referrers(digest)`."""

    #: its blobs are files on this machine (it is a `LocalSource`)
    local: bool

    def entries(self) -> list[Entry]:
        """The images it holds; NotFoundError when there are none."""
        ...

    def close(self) -> None: ...


class ImageSource(Source, Protocol):
    """A source that serves manifests and blobs itself (all but the bulk sources)."""

    def fetch_manifest(self, reference: str) -> Resolved:
        """The manifest or index for a tag or digest, its digest verified."""
        ...

    def get_blob(self, digest: str) -> bytes:
        """A small blob (a config), verified against `digest`."""
        ...


class LocalSource(ImageSource, Protocol):
    """A source on this machine (oci://, dir://, tar://, docker://): layers are files."""

    def blob_file(self, digest: str) -> BlobFile:
        """Where the blob's bytes are; NotFoundError when the source lacks it."""
        ...


def local_blob(source: LocalSource, digest: str, size: int) -> BlobFile:
    """Where a local source holds layer `digest` of `size` bytes (the manifest's). Raises
    NotFoundError when it has none, DigestError when what the source measured is another
    blob (bytes that hash otherwise, or an archive member of another size)."""
    blob = source.blob_file(digest)
    if blob.digest_seen is not None and blob.digest_seen != digest:
        raise DigestError(f"layer {digest}: the archive's bytes hash to {blob.digest_seen}")
    if blob.size >= 0 and blob.size != size:
        raise DigestError(
            f"layer {digest}: the manifest says {size} bytes, the archive's member holds "
            f"{blob.size}"
        )
    return blob


def is_local(source: ImageSource) -> TypeGuard[LocalSource]:
    """Whether fetch can take the source's layers from files rather than download them."""
    return source.local


def resolved_from_bytes(
    body: bytes, media_type_hint: str, where: str, expect: str | None = None
) -> Resolved:
    """`body` as a Resolved; DigestError when it does not hash to `expect`."""
    digest = digest_of(body)
    if expect is not None and digest != expect:
        raise DigestError(f"{where}: manifest {expect} hashes to {digest}")
    media_type = mediatypes.effective_media_type(media_type_hint, body)
    return Resolved(body, media_type, digest, mediatypes.parse(body, media_type))


def check_blob(data: bytes, digest: str, where: str) -> bytes:
    """`data`, once it hashes to `digest` (DigestError naming `where` otherwise)."""
    got = digest_of(data)
    if got != digest:
        raise DigestError(f"{where}: blob {digest} hashes to {got}")
    return data


def check_depth(digest: str, depth: int) -> None:
    """ManifestError when an index sits deeper than MAX_INDEX_DEPTH levels."""
    if depth >= MAX_INDEX_DEPTH:
        raise ManifestError(
            f"index {digest}: indexes nested more than {MAX_INDEX_DEPTH} levels deep; refused"
        )


def serves(source: ImageSource, digest: str) -> bool:
    """Does the source have this blob's bytes (a foreign layer's may be elsewhere)?"""
    has_blob = getattr(source, "has_blob", None)
    if has_blob is not None:
        return bool(has_blob(digest))
    if not is_local(source):
        return True
    try:
        source.blob_file(digest)
    except NotFoundError:
        return False
    return True


def platform_manifest(
    source: ImageSource, top: Resolved, wanted: Platform, depth: int = 0
) -> Resolved:
    """The image manifest for `wanted` below the index `top`, as docker picks it
    (`mediatypes.select_platform`: attestation entries never count). Entries that are
    indexes themselves (containerd and Docker's containerd image store nest them) are
    searched too, depth first, at most MAX_INDEX_DEPTH levels down.

    PlatformError naming the platforms there are; ManifestError past the depth bound."""
    found = _search_platform(source, top, wanted, depth, set())
    if isinstance(found, Resolved):
        return found
    raise PlatformError(
        f"no manifest for platform {wanted} (available: "
        f"{', '.join(sorted(found)) or 'none listed'})"
    )


def _search_platform(
    source: ImageSource, top: Resolved, wanted: Platform, depth: int, available: set[str]
) -> Resolved | set[str]:
    """The manifest, or (not found) the platforms seen on the way, in `available`."""
    check_depth(top.digest, depth)
    index = top.parsed
    assert isinstance(index, ImageIndex)
    nested = [
        d
        for d in index.manifests
        if d.media_type in mediatypes.INDEX_TYPES and not mediatypes.is_attestation(d)
    ]
    direct = ImageIndex(index.media_type, [d for d in index.manifests if d not in nested])
    available.update(
        str(d.platform) for d in direct.manifests if d.platform and not mediatypes.is_attestation(d)
    )
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
            wanted.os,
            wanted.architecture,
        ):
            available.add(str(d.platform))
            continue
        child: Resolved = source.fetch_manifest(d.digest)
        if not isinstance(child.parsed, ImageIndex):
            raise ManifestError(
                f"index {top.digest}: {d.digest} is listed as an index but is a {child.media_type}"
            )
        found = _search_platform(source, child, wanted, depth + 1, available)
        if isinstance(found, Resolved):
            return found
    return available
