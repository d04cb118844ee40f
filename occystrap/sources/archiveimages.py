"""The pieces of a `docker save` archive that `dockersave` reasons about, and the checks
that compare them: an OCI manifest against `manifest.json`'s image (`disagreement`), an
image's blobs against its manifest and config (`inconsistency`). Pure apart from reading
members through `Members`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from occystrap import mediatypes as mt
from occystrap.errors import ImageError, ManifestError
from occystrap.mediatypes import ImageManifest
from occystrap.oci import IMAGE_NAME, REF_NAME, blob_rel
from occystrap.reference import ImageRef, normalized_name
from occystrap.sources.base import Resolved
from occystrap.sources.local import name_of


class Members(Protocol):
    """The archive's members, as the tarball source has spooled them."""

    where: str  # tar:///PATH or docker://NAME, for messages

    def digest_of(self, name: str) -> tuple[str, int, str]:
        """(sha256 digest, size, compression sniffed from the first bytes) of a member;
        NotFoundError when the archive has no such member."""

    def read(self, name: str) -> bytes:
        """A small member's bytes (capped); NotFoundError, ManifestError when too large."""

    def blob_members(self) -> list[tuple[str, int]]:
        """(name, size) of every regular member under blobs/sha256/."""


@dataclass(frozen=True)
class ArchiveLayer:
    member: str
    digest: str
    size: int
    compression: str  # none, gzip or zstd, from the bytes themselves


@dataclass
class Item:
    """One image of manifest.json, with its members read."""

    number: int  # 1-based position in manifest.json
    tags: list[str]
    config_member: str = ""
    config: bytes = b""
    config_digest: str = ""
    diff_ids: list[str] = field(default_factory=list)
    layers: list[ArchiveLayer] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        if self.tags:
            return self.tags[0]
        return f"image {self.number} of manifest.json ({self.config_member or 'no Config'})"


@dataclass(frozen=True)
class Offer:
    """One image the archive offers: how to name it, what fetch_manifest is asked for, and
    the names `#NAME:TAG` may pick it by. `error` set: it cannot be copied, and why."""

    ref: ImageRef
    reference: str
    names: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class Reading:
    offers: list[Offer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rebuilt: dict[str, Resolved] = field(default_factory=dict)  # digest → made-up manifest
    configs: dict[str, bytes] = field(default_factory=dict)  # digest → config bytes
    absent: dict[str, str] = field(default_factory=dict)  # child digest → why it is missing


def ref_of(annotations: dict[str, str] | None, tags: list[str]) -> ImageRef:
    """An image's name: manifest.json's RepoTag (what `docker load` tags it with) that the
    index.json entry names, else the entry's annotations, else the first RepoTag."""
    annotations = annotations or {}
    named = annotations.get(IMAGE_NAME)
    for tag in tags:
        if named is None or named in (tag, normalized_name(tag)):
            return name_of(tag, None)
    if named or annotations.get(REF_NAME):
        return name_of(named, annotations.get(REF_NAME))
    return name_of(None, None)


def names_of(ref: ImageRef, tags: list[str]) -> tuple[str, ...]:
    """What `#NAME:TAG` may pick the image by: each of its names, also in full form."""
    found = [str(ref), f"{ref.name}:{ref.tag}", *tags, *map(normalized_name, tags)]
    if ref.repo_tag:
        found += [ref.repo_tag, normalized_name(ref.repo_tag)]
    return tuple(found)


LAYER_TYPES = {"none": mt.OCI_LAYER, "gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD}


def disagreement(manifest: ImageManifest, item: Item) -> str | None:
    """Why an OCI manifest does not describe the manifest.json image `item` (same config
    assumed), or None when it does: the same layers, in the same order, with the sizes and
    compression of the archive's bytes."""
    ours, theirs = item.layers, manifest.layers
    if len(theirs) != len(ours):
        return f"it lists {len(theirs)} layers, manifest.json {len(ours)}"
    for n, (d, layer) in enumerate(zip(theirs, ours, strict=True)):
        if d.digest != layer.digest:
            return (
                f"its layer {n} is {d.digest}, manifest.json's is {layer.member} ({layer.digest})"
            )
        if d.size != layer.size:
            return f"its layer {n} is {d.size} bytes, {layer.member} has {layer.size}"
        try:
            compression = mt.compression_of(d.media_type)
        except ManifestError as exc:
            return f"its layer {n}: {exc}"
        if compression != layer.compression:
            kind = "an uncompressed tar" if layer.compression == "none" else layer.compression
            return f"its layer {n} is {d.media_type}, but {layer.member} is {kind}"
    return None


def inconsistency(members: Members, manifest: ImageManifest) -> str | None:
    """What in the archive contradicts `manifest`, found without decompressing: a
    missing or differently sized blob, a layer count that is not the config's, an
    uncompressed layer that is not its diff_id."""
    try:
        member = blob_rel(manifest.config.digest)
        diff_ids = mt.config_diff_ids(members.read(member), member)
        if len(diff_ids) != len(manifest.layers):
            return (
                f"its manifest lists {len(manifest.layers)} layers, its config "
                f"{member} has {len(diff_ids)} diff_ids"
            )
        for n, (d, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
            member = blob_rel(d.digest)
            digest, size, compression = members.digest_of(member)
            if digest != d.digest:
                return f"{member} hashes to {digest}"
            if size != d.size:
                return f"its layer {n} is {d.size} bytes, {member} has {size}"
            if compression == "none" and digest != diff_id:
                return (
                    f"layer {n} ({member}) is an uncompressed tar, but its config's "
                    f"diff_id is {diff_id}"
                )
    except ImageError as exc:
        return str(exc).removeprefix(f"{members.where}: ")
    return None
