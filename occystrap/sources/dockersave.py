"""What a `docker save` archive holds, by the rules `docker load` reads it with.

`manifest.json` says which images the archive holds: each one's config, its layers in order
and its tags. `index.json` and the OCI manifests in `blobs/` (Docker ≥ 25) only keep the
original manifest bytes and names, and only when they agree with `manifest.json` and the
config. Docker 25.0.x wrote several kinds of disagreement (`"manifests": null`, an index that
lists fewer images, OCI manifests with fewer layers, other sizes or another order); where
one is found, the image is rebuilt from `manifest.json` and its config, as `docker load`
would read it, and a note says so (shown with -v). An image that cannot be read that way
(a layer count that disagrees with the config's `rootfs.diff_ids`, an uncompressed layer
whose bytes are not its diff_id, a missing member) becomes a failed entry: one line naming
the archive, the image and what disagrees. Every image of either file is offered or reported.

An archive without `manifest.json` (skopeo's oci-archive, an OCI layout in a tar) is read
from `index.json` alone.

A containerd image store's archive names an index in `index.json`: each platform's manifest
and its attestation manifest, with only the saved platforms' blobs present. The index is
offered whole (resolve picks the platform); the children missing from the archive are
remembered so that asking for one says which platforms the archive has.

Pure apart from reading members through `Members` (the tarball source's spool).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from occystrap import mediatypes as mt
from occystrap.errors import ImageError, ManifestError, NotFoundError
from occystrap.formats.ocilayout import IMAGE_NAME, REF_NAME
from occystrap.mediatypes import Descriptor, ImageIndex, ImageManifest
from occystrap.reference import ImageRef
from occystrap.sources import Resolved, resolved_from_bytes, sha256_of
from occystrap.sources.directory import synthesize
from occystrap.sources.local import name_of

MAX_SCAN = 256 << 10  # blobs larger than this are not looked at as possible manifests


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


def blob_member(digest: str) -> str:
    return f"blobs/sha256/{digest.split(':', 1)[1]}"


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


def full_name(tag: str) -> str:
    """A RepoTag as Docker annotates it in index.json: `app:1` → `docker.io/library/app:1`."""
    name = tag.rsplit(":", 1)[0]
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return tag
    return f"docker.io/{tag}" if "/" in name else f"docker.io/library/{tag}"


def ref_of(annotations: dict[str, str] | None, tags: list[str]) -> ImageRef:
    """An image's name: manifest.json's RepoTag (what `docker load` tags it with) that the
    index.json entry names, else the entry's annotations, else the first RepoTag."""
    annotations = annotations or {}
    named = annotations.get(IMAGE_NAME)
    for tag in tags:
        if named is None or named in (tag, full_name(tag)):
            return name_of(tag, None)
    if named or annotations.get(REF_NAME):
        return name_of(named, annotations.get(REF_NAME))
    return name_of(None, None)


def names_of(ref: ImageRef, tags: list[str]) -> tuple[str, ...]:
    found = [str(ref), f"{ref.name}:{ref.tag}", *tags]
    if ref.repo_tag:
        found.append(ref.repo_tag)
    return tuple(found)


class ArchiveReader:
    """Applies the module's rules to one archive's members; `read()` gives the Reading."""

    def __init__(self, members: Members, meta: dict[str, bytes]) -> None:
        self.m = members
        self.where = members.where
        self.meta = meta
        self.out = Reading()

    def note(self, text: str) -> None:
        self.out.notes.append(f"{self.where}: {text}")

    # -- the documents -----------------------------------------------------------------------

    def read(self) -> Reading:
        if "manifest.json" not in self.meta:
            if "index.json" not in self.meta:
                raise ManifestError(f"{self.where}: neither manifest.json nor index.json; not "
                                    "an image archive")
            self._oci_only()
            return self.out
        items = self._items()
        descriptors = self._index_descriptors()
        claimed: dict[int, list[tuple[Descriptor, str]]] = {}  # item → (descriptor, digest)
        covered: set[int] = set()  # items an index of index.json holds
        by_config: dict[str, list[Item]] = {}
        for item in items:
            if item.config_digest:  # a broken item too: index.json may describe it
                by_config.setdefault(item.config_digest, []).append(item)
        extra: list[Offer] = []
        for d in descriptors:
            self._descriptor(d, by_config, claimed, covered, extra)
        for item in items:
            self._offer_item(item, claimed.get(item.number, []), item.number in covered)
        self.out.offers += extra
        if not self.out.offers:
            raise NotFoundError(f"{self.where}: manifest.json lists no images")
        return self.out

    def _items(self) -> list[Item]:
        try:
            doc = json.loads(self.meta["manifest.json"])
        except ValueError as exc:
            raise ManifestError(f"{self.where}: manifest.json is not valid JSON: {exc}") from None
        if not isinstance(doc, list):
            raise ManifestError(f"{self.where}: manifest.json is not a list of images")
        items = []
        for number, entry in enumerate(doc, 1):
            tags = entry.get("RepoTags") if isinstance(entry, dict) else None
            item = Item(number, [str(t) for t in tags] if isinstance(tags, list) else [])
            try:
                self._fill(item, entry)
            except ImageError as exc:
                item.error = f"{item.label}: {exc}"
            items.append(item)
        return items

    def _fill(self, item: Item, entry: object) -> None:
        """Read an entry's config and layers; ImageError says what is wrong with it."""
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ManifestError("manifest.json entry lacks Config or Layers")
        item.config_member = entry["Config"]
        item.config = self.m.read(item.config_member)
        item.config_digest = sha256_of(item.config)
        item.diff_ids = mt.config_diff_ids(item.config, item.config_member)
        for rel in entry["Layers"]:
            digest, size, compression = self.m.digest_of(str(rel))
            item.layers.append(ArchiveLayer(str(rel), digest, size, compression))
        if len(item.layers) != len(item.diff_ids):
            raise ManifestError(f"manifest.json lists {len(item.layers)} layers, its config "
                                f"{item.config_member} has {len(item.diff_ids)} diff_ids")
        for n, (layer, diff_id) in enumerate(zip(item.layers, item.diff_ids, strict=True)):
            if layer.compression == "none" and layer.digest != diff_id:
                raise ManifestError(f"layer {n} ({layer.member}) is an uncompressed tar "
                                    f"hashing to {layer.digest}, but its config's diff_id is "
                                    f"{diff_id}")

    def _index_descriptors(self) -> list[Descriptor]:
        """index.json's entries; with manifest.json beside it, a bad index.json is a note."""
        if "index.json" not in self.meta:
            return []
        try:
            doc = mt.json_object(self.meta["index.json"], "index.json")
            manifests = doc.get("manifests")
            if manifests is None:
                self.note("index.json lists no manifests (\"manifests\": null, as Docker 25.0 "
                          "wrote for `docker save IMAGE_ID`); read manifest.json")
                return []
            parsed = mt.parse(self.meta["index.json"], mt.OCI_INDEX)
        except ManifestError as exc:
            self.note(f"index.json ignored ({exc}); read manifest.json")
            return []
        assert isinstance(parsed, ImageIndex)
        return parsed.manifests

    def _manifest(self, d: Descriptor) -> Resolved | None:
        """The manifest or index `d` names, or None (and a note) when it is absent or bad."""
        member = blob_member(d.digest)
        try:
            body = self.m.read(member)
            return resolved_from_bytes(body, d.media_type, f"{self.where}: {member}",
                                       expect=d.digest)
        except NotFoundError:
            self.note(f"index.json lists {d.digest}, which is not in the archive")
        except ImageError as exc:
            self.note(f"index.json's {member} ignored: {exc}")
        return None

    # -- index.json entries ------------------------------------------------------------------

    def _descriptor(self, d: Descriptor, by_config: dict[str, list[Item]],
                    claimed: dict[int, list[tuple[Descriptor, str]]], covered: set[int],
                    extra: list[Offer]) -> None:
        got = self._manifest(d)
        if got is None:
            return
        if isinstance(got.parsed, ImageIndex):
            self._nested_index(d, got, by_config, covered, extra)
            return
        items = by_config.get(got.parsed.config.digest, [])
        if not items:
            ref = ref_of(d.annotations, [])
            self.note(f"index.json lists {ref.repo_tag or d.digest} ({d.digest}), which "
                      "manifest.json does not; copied from its OCI manifest")
            extra.append(Offer(ref, d.digest, names_of(ref, [])))
            return
        item = items[0]
        if item.error is not None:
            return  # reported once, as manifest.json's image
        why = disagreement(got.parsed, item)
        if why is None:
            claimed.setdefault(item.number, []).append((d, d.digest))
            return
        self.note(f"{blob_member(d.digest)} ({item.label}) disagrees with manifest.json: "
                  f"{why}; rebuilt from manifest.json and the config")
        claimed.setdefault(item.number, []).append((d, self._rebuild(item)))

    def _nested_index(self, d: Descriptor, got: Resolved, by_config: dict[str, list[Item]],
                      covered: set[int], extra: list[Offer]) -> None:
        """A containerd image store's index: offered whole when its present children agree
        with manifest.json; the absent ones are remembered."""
        assert isinstance(got.parsed, ImageIndex)
        present: list[str] = []
        absent: list[tuple[Descriptor, str]] = []
        mine: list[Item] = []
        for child in got.parsed.manifests:
            try:
                sub = self._child(child)
            except ImageError as exc:
                self.note(f"index {got.digest}: {exc}; copied manifest.json's images instead")
                return
            platform = str(child.platform) if child.platform else child.digest
            if sub is None:
                absent.append((child, platform))
                continue
            present.append(platform)
            if isinstance(sub.parsed, ImageManifest):
                for item in by_config.get(sub.parsed.config.digest, []):
                    why = item.error or disagreement(sub.parsed, item)
                    if why is not None:
                        self.note(f"index {got.digest}: {platform} ({blob_member(child.digest)})"
                                  f" disagrees with manifest.json: {why}; copied manifest.json's"
                                  " images instead")
                        return
                    mine.append(item)
        has = ", ".join(p for p in present if "unknown" not in p) or "none"
        for child, platform in absent:
            self.out.absent[child.digest] = (
                f"index {got.digest} lists {platform} ({child.digest}), which is not in the "
                f"archive (docker save --platform keeps only the platforms asked for); it has "
                f"{has}: pick one with --platform")
        covered.update(item.number for item in mine)
        tags = [tag for item in mine for tag in item.tags]
        ref = ref_of(d.annotations, tags)
        extra.append(Offer(ref, d.digest, names_of(ref, tags)))

    def _child(self, child: Descriptor) -> Resolved | None:
        try:
            body = self.m.read(blob_member(child.digest))
        except NotFoundError:
            return None
        return resolved_from_bytes(body, child.media_type,
                                   f"{self.where}: {blob_member(child.digest)}",
                                   expect=child.digest)

    # -- manifest.json images ----------------------------------------------------------------

    def _offer_item(self, item: Item, claims: list[tuple[Descriptor, str]],
                    covered: bool) -> None:
        if item.error is not None:
            ref = name_of(item.tags[0] if item.tags else None, None)
            self.out.offers.append(Offer(ref, f"broken:{item.number}", names_of(ref, item.tags),
                                         error=f"{self.where}: {item.error}"))
            return
        self.out.configs[item.config_digest] = item.config
        if covered and not claims:
            return  # an index of index.json holds it
        for d, digest in claims:
            ref = ref_of(d.annotations, item.tags)
            self.out.offers.append(Offer(ref, digest, names_of(ref, item.tags)))
        if claims:
            return
        digest = self._found_in_blobs(item) or self._rebuild(item)
        ref = ref_of(None, item.tags)
        self.out.offers.append(Offer(ref, digest, names_of(ref, item.tags)))

    def _found_in_blobs(self, item: Item) -> str | None:
        """The digest of an OCI manifest in blobs/ that agrees with `item` (index.json did
        not name one: a `"manifests": null` archive keeps its manifests there)."""
        if "index.json" not in self.meta:
            return None
        for name, size in self.m.blob_members():
            if size > MAX_SCAN:
                continue
            body = self.m.read(name)
            if not body.startswith(b"{"):
                continue
            try:
                got = resolved_from_bytes(body, "", f"{self.where}: {name}")
            except ImageError:
                continue
            if isinstance(got.parsed, ImageManifest) \
                    and got.parsed.config.digest == item.config_digest:
                why = disagreement(got.parsed, item)
                if why is None:
                    return got.digest
                self.note(f"{name} ({item.label}) disagrees with manifest.json: {why}; "
                          "rebuilt from manifest.json and the config")
        return None

    def _rebuild(self, item: Item) -> str:
        """An OCI manifest for `item` from manifest.json and its config (layer media types
        from the bytes); returns its digest."""
        body = synthesize(item.config, item.config_digest,
                          [(x.digest, x.size) for x in item.layers])
        doc = json.loads(body)
        for entry, layer in zip(doc["layers"], item.layers, strict=True):
            entry["mediaType"] = LAYER_TYPES[layer.compression]
        got = resolved_from_bytes(json.dumps(doc, indent=3).encode(), mt.OCI_MANIFEST,
                                  self.where)
        self.out.rebuilt[got.digest] = got
        return got.digest

    # -- no manifest.json --------------------------------------------------------------------

    def _oci_only(self) -> None:
        try:
            parsed = mt.parse(self.meta["index.json"], mt.OCI_INDEX)
        except ManifestError as exc:
            raise ManifestError(f"{self.where}: index.json: {exc}") from None
        assert isinstance(parsed, ImageIndex)
        if not parsed.manifests:
            raise NotFoundError(f"{self.where}: index.json lists no images")
        for d in parsed.manifests:
            ref = ref_of(d.annotations, [])
            self.out.offers.append(Offer(ref, d.digest, names_of(ref, [])))


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
            return (f"its layer {n} is {d.digest}, manifest.json's is {layer.member} "
                    f"({layer.digest})")
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
