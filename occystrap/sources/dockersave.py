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

from occystrap import mediatypes as mt
from occystrap.errors import ImageError, ManifestError, NotFoundError
from occystrap.mediatypes import Descriptor, ImageIndex, ImageManifest
from occystrap.oci import blob_rel
from occystrap.reference import digest_of
from occystrap.sources.archiveimages import (
    LAYER_TYPES,
    ArchiveLayer,
    Item,
    Members,
    Offer,
    Reading,
    disagreement,
    inconsistency,
    names_of,
    ref_of,
)
from occystrap.sources.base import Resolved, resolved_from_bytes
from occystrap.sources.directory import synthesize
from occystrap.sources.local import name_of

MAX_SCAN = 256 << 10  # blobs larger than this are not looked at as possible manifests


class ArchiveReader:
    """Applies the module's rules to one archive's members; `read()` gives the Reading."""

    def __init__(self, members: Members, meta: dict[str, bytes]) -> None:
        self.m = members
        self.where = members.where
        self.meta = meta
        self.out = Reading()
        self._scanned: dict[str, list[tuple[str, Resolved]]] | None = None  # config → manifests

    def note(self, text: str) -> None:
        self.out.notes.append(f"{self.where}: {text}")

    # -- the documents -----------------------------------------------------------------------

    def read(self) -> Reading:
        if "manifest.json" not in self.meta:
            if "index.json" not in self.meta:
                raise ManifestError(
                    f"{self.where}: neither manifest.json nor index.json; not an image archive"
                )
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
                # the member readers name the archive; the offer's error names it once
                text = str(exc).removeprefix(f"{self.where}: ")
                item.error = f"{item.label}: {text}"
            items.append(item)
        return items

    def _fill(self, item: Item, entry: object) -> None:
        """Read an entry's config and layers; ImageError says what is wrong with it."""
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("Config"), str)
            or not isinstance(entry.get("Layers"), list)
        ):
            raise ManifestError("manifest.json entry lacks Config or Layers")
        item.config_member = entry["Config"]
        item.config = self.m.read(item.config_member)
        item.config_digest = digest_of(item.config)
        item.diff_ids = mt.config_diff_ids(item.config, item.config_member)
        for rel in entry["Layers"]:
            digest, size, compression = self.m.digest_of(str(rel))
            item.layers.append(ArchiveLayer(str(rel), digest, size, compression))
        if len(item.layers) != len(item.diff_ids):
            raise ManifestError(
                f"manifest.json lists {len(item.layers)} layers, its config "
                f"{item.config_member} has {len(item.diff_ids)} diff_ids"
            )
        for n, (layer, diff_id) in enumerate(zip(item.layers, item.diff_ids, strict=True)):
            if layer.compression == "none" and layer.digest != diff_id:
                raise ManifestError(
                    f"layer {n} ({layer.member}) is an uncompressed tar "
                    f"hashing to {layer.digest}, but its config's diff_id is "
                    f"{diff_id}"
                )

    def _index_descriptors(self) -> list[Descriptor]:
        """index.json's entries; with manifest.json beside it, a bad index.json is a note."""
        if "index.json" not in self.meta:
            return []
        try:
            doc = mt.json_object(self.meta["index.json"], "index.json")
            manifests = doc.get("manifests")
            if manifests is None:
                self.note(
                    'index.json lists no manifests ("manifests": null, as Docker 25.0 '
                    "wrote for `docker save IMAGE_ID`); read manifest.json"
                )
                return []
            parsed = mt.parse(self.meta["index.json"], mt.OCI_INDEX)
        except ManifestError as exc:
            self.note(f"index.json ignored ({exc}); read manifest.json")
            return []
        assert isinstance(parsed, ImageIndex)
        return parsed.manifests

    def _manifest(self, d: Descriptor) -> Resolved | None:
        """The manifest or index `d` names, or None (and a note) when it is absent or bad."""
        member = blob_rel(d.digest)
        try:
            body = self.m.read(member)
            return resolved_from_bytes(
                body, d.media_type, f"{self.where}: {member}", expect=d.digest
            )
        except NotFoundError:
            self.note(f"index.json lists {d.digest}, which is not in the archive")
        except ImageError as exc:
            self.note(f"index.json's {member} ignored: {exc}")
        return None

    # -- index.json entries ------------------------------------------------------------------

    def _descriptor(
        self,
        d: Descriptor,
        by_config: dict[str, list[Item]],
        claimed: dict[int, list[tuple[Descriptor, str]]],
        covered: set[int],
        extra: list[Offer],
    ) -> None:
        got = self._manifest(d)
        if got is None:
            ref = ref_of(d.annotations, [])
            tags = [tag for items in by_config.values() for item in items for tag in item.tags]
            if ref_of(d.annotations, tags) not in [name_of(tag, None) for tag in tags]:
                # not an image manifest.json holds under another name: reported, not dropped
                listed = f"{ref.repo_tag or d.digest} ({d.digest})"
                unheld = "neither in blobs/ nor in manifest.json"
                extra.append(
                    Offer(
                        ref,
                        f"broken:{d.digest}",
                        names_of(ref, []),
                        error=(f"{self.where}: index.json lists {listed}, which is {unheld}"),
                    )
                )
            return
        if isinstance(got.parsed, ImageIndex):
            why = self._nested_index(d, got, by_config, covered, extra)
            if why is not None:
                self.note(f"index {d.digest}: {why}; copied manifest.json's images instead")
            return
        items = by_config.get(got.parsed.config.digest, [])
        if not items:
            offer = self._standalone(d, got.parsed)
            if offer.error is None:
                self.note(
                    f"index.json lists {offer.ref.repo_tag or d.digest} ({d.digest}), "
                    "which manifest.json does not; copied from its OCI manifest"
                )
            extra.append(offer)
            return
        item = items[0]
        if item.error is not None:
            return  # reported once, as manifest.json's image
        why = disagreement(got.parsed, item)
        if why is None:
            claimed.setdefault(item.number, []).append((d, d.digest))
            return
        self.note(
            f"{blob_rel(d.digest)} ({item.label}) disagrees with manifest.json: "
            f"{why}; rebuilt from manifest.json and the config"
        )
        claimed.setdefault(item.number, []).append((d, self._rebuild(item)))

    def _nested_index(
        self,
        d: Descriptor,
        got: Resolved,
        by_config: dict[str, list[Item]],
        covered: set[int],
        extra: list[Offer],
    ) -> str | None:
        """A containerd image store's index: offered whole when its present children agree
        with manifest.json (the absent ones are remembered); else why not."""
        assert isinstance(got.parsed, ImageIndex)
        present: list[str] = []
        absent: list[tuple[Descriptor, str]] = []
        mine: list[Item] = []
        for child in got.parsed.manifests:
            try:
                sub = self._child(child)
            except ImageError as exc:
                return str(exc).removeprefix(f"{self.where}: ")
            platform = str(child.platform) if child.platform else child.digest
            if sub is None:
                absent.append((child, platform))
                continue
            present.append(platform)
            if isinstance(sub.parsed, ImageManifest):
                for item in by_config.get(sub.parsed.config.digest, []):
                    why = item.error or disagreement(sub.parsed, item)
                    if why is not None:
                        return (
                            f"{platform} ({blob_rel(child.digest)}) disagrees with "
                            f"manifest.json: {why}"
                        )
                    mine.append(item)
        has = ", ".join(p for p in present if "unknown" not in p) or "none"
        for child, platform in absent:
            self.out.absent[child.digest] = (
                f"index {got.digest} lists {platform} ({child.digest}), which is not in the "
                f"archive (docker save --platform keeps only the platforms asked for); it has "
                f"{has}: pick one with --platform"
            )
        covered.update(item.number for item in mine)
        tags = [tag for item in mine for tag in item.tags]
        ref = ref_of(d.annotations, tags)
        extra.append(Offer(ref, d.digest, names_of(ref, tags)))
        return None

    def _child(self, child: Descriptor) -> Resolved | None:
        try:
            body = self.m.read(blob_rel(child.digest))
        except NotFoundError:
            return None
        return resolved_from_bytes(
            body, child.media_type, f"{self.where}: {blob_rel(child.digest)}", expect=child.digest
        )

    # -- manifest.json images ----------------------------------------------------------------

    def _offer_item(self, item: Item, claims: list[tuple[Descriptor, str]], covered: bool) -> None:
        if item.error is not None:
            ref = name_of(item.tags[0] if item.tags else None, None)
            self.out.offers.append(
                Offer(
                    ref,
                    f"broken:{item.number}",
                    names_of(ref, item.tags),
                    error=f"{self.where}: {item.error}",
                )
            )
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
        # One image per RepoTag, as `docker load` tags it with each (Docker < 25 writes one
        # manifest.json entry for `docker save A B` of one image; Docker >= 25 one index.json
        # entry per tag): every name is kept, and `#NAME:TAG` picks one.
        for tags in [[tag] for tag in item.tags] or [[]]:
            ref = ref_of(None, tags)
            self.out.offers.append(Offer(ref, digest, names_of(ref, tags)))

    def _found_in_blobs(self, item: Item) -> str | None:
        """The digest of an OCI manifest in blobs/ that agrees with `item` (index.json did
        not name one: a `"manifests": null` archive keeps its manifests there)."""
        if "index.json" not in self.meta:
            return None
        if self._scanned is None:  # every small JSON blob that parses as a manifest, once
            self._scanned = {}
            for name, size in self.m.blob_members():
                body = self.m.read(name) if size <= MAX_SCAN else b""
                if not body.startswith(b"{"):
                    continue
                try:
                    got = resolved_from_bytes(body, "", f"{self.where}: {name}")
                except ImageError:
                    continue
                if isinstance(got.parsed, ImageManifest):
                    self._scanned.setdefault(got.parsed.config.digest, []).append((name, got))
        for name, got in self._scanned.get(item.config_digest, []):
            assert isinstance(got.parsed, ImageManifest)
            why = disagreement(got.parsed, item)
            if why is None:
                return got.digest
            self.note(
                f"{name} ({item.label}) disagrees with manifest.json: {why}; "
                "rebuilt from manifest.json and the config"
            )
        return None

    def _rebuild(self, item: Item) -> str:
        """An OCI manifest for `item` from manifest.json and its config (layer media types
        from the bytes); returns its digest."""
        body = synthesize(
            item.config, item.config_digest, [(x.digest, x.size) for x in item.layers]
        )
        doc = json.loads(body)
        for entry, layer in zip(doc["layers"], item.layers, strict=True):
            entry["mediaType"] = LAYER_TYPES[layer.compression]
        got = resolved_from_bytes(json.dumps(doc, indent=3).encode(), mt.OCI_MANIFEST, self.where)
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
            try:
                got = self._child(d)
            except ImageError as exc:
                got, why = None, str(exc).removeprefix(f"{self.where}: ")
            else:
                why = f"{blob_rel(d.digest)}: not in the archive"
            if got is None:
                ref = ref_of(d.annotations, [])
                self.out.offers.append(
                    Offer(
                        ref, f"broken:{d.digest}", names_of(ref, []), error=f"{self.where}: {why}"
                    )
                )
            elif isinstance(got.parsed, ImageIndex):
                nested = self._nested_index(d, got, {}, set(), self.out.offers)
                if nested is not None:
                    ref = ref_of(d.annotations, [])
                    self.out.offers.append(
                        Offer(
                            ref,
                            f"broken:{d.digest}",
                            names_of(ref, []),
                            error=f"{self.where}: index {d.digest}: {nested}",
                        )
                    )
            else:
                self.out.offers.append(self._standalone(d, got.parsed))

    def _standalone(self, d: Descriptor, manifest: ImageManifest) -> Offer:
        """An image only index.json lists: offered when its blobs are there and agree with
        its config, else a failed entry saying why."""
        ref = ref_of(d.annotations, [])
        why = inconsistency(self.m, manifest)
        if why is None:
            return Offer(ref, d.digest, names_of(ref, []))
        return Offer(
            ref,
            f"broken:{d.digest}",
            names_of(ref, []),
            error=f"{self.where}: {ref.repo_tag or d.digest}: {why}",
        )
