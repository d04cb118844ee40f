"""tar://PATH[#NAME:TAG] as a source: what `docker save` writes (legacy, or Docker ≥25's OCI
layout with `manifest.json` at the end), skopeo's docker-archive, and our own tar://.

One pass over the archive (it may be a pipe, `tar:///dev/stdin`): the metadata files are kept
(small, capped), every other regular member is spooled to a file while it is hashed, so no
layer is ever held in memory and the metadata may come last. Member names and links are
checked as they stream by: an absolute path, a `..` or a link that leaves the archive is
refused, whatever Python's tarfile would allow.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tarfile
from typing import BinaryIO

from occystrap import mediatypes as mt
from occystrap.errors import DestinationError, ManifestError, NotFoundError, UsageError
from occystrap.formats.ocilayout import IMAGE_NAME, REF_NAME
from occystrap.reference import DIGEST_RE, normalized_name
from occystrap.sources import Entry, Resolved, check_blob, resolved_from_bytes, sha256_of
from occystrap.sources.directory import synthesize
from occystrap.sources.local import MAX_METADATA, BlobFile, name_of

METADATA = frozenset({"manifest.json", "index.json", "oci-layout", "repositories"})
CHUNK = 1 << 20
_MAGIC = {b"\x1f\x8b": mt.OCI_LAYER_GZIP, b"\x28\xb5\x2f\xfd": mt.OCI_LAYER_ZSTD}


def safe_name(name: str, where: str) -> str:
    """The member's normalised name, or ManifestError if it would leave the archive."""
    if name.startswith("/") or "\\" in name:
        raise ManifestError(f"{where}: member {name!r} has an absolute path; refused")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise ManifestError(f"{where}: member {name!r} escapes the archive; refused")
    return norm


def _check_room(spool: str, size: int, what: str) -> None:
    """Before spooling a member: the tar header gives its size, so a source bigger than the
    spool's disk (--temp-dir) fails with one line before the disk is full, not after."""
    free = shutil.disk_usage(spool).free
    if size > free:
        raise DestinationError(f"not enough free space in {spool} to spool {what}: need "
                               f"{size / 2**20:.0f} MiB, have {free / 2**20:.0f} MiB "
                               "(--temp-dir)")


def sniff_layer_type(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    for magic, media_type in _MAGIC.items():
        if head.startswith(magic):
            return media_type
    return mt.OCI_LAYER


class TarballSource:
    local = True

    def __init__(self, path: str, select: str | None, spool: str,
                 fileobj: BinaryIO | None = None, where: str | None = None) -> None:
        """`fileobj`: read this stream instead of `path` (a Docker engine's export)."""
        self.path = path
        self.select = select
        self.fileobj = fileobj
        self.where = where or f"tar://{path}"
        self._meta: dict[str, bytes] = {}
        self._files: dict[str, BlobFile] = {}
        self._links: dict[str, str] = {}
        self._by_digest: dict[str, BlobFile] = {}
        self._synthetic: dict[str, Resolved] = {}  # legacy images: made-up manifests
        self._configs: dict[str, bytes] = {}  # legacy images: their configs
        self._read(spool)

    # -- the one pass ------------------------------------------------------------------------

    def _read(self, spool: str) -> None:
        try:
            if self.fileobj is not None:
                archive = tarfile.open(fileobj=self.fileobj, mode="r|*")  # noqa: SIM115
            else:
                archive = tarfile.open(self.path, mode="r|*")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFoundError(f"{self.where}: no such file") from None
        except (tarfile.TarError, OSError) as exc:
            raise UsageError(f"{self.where}: not a readable tar archive: {exc}") from None
        count = 0
        try:
            for member in archive:
                name = safe_name(member.name, self.where)
                if member.issym() or member.islnk():
                    base = posixpath.dirname(name) if member.issym() else ""
                    self._links[name] = safe_name(posixpath.join(base, member.linkname),
                                                  f"{self.where}: link {name}")
                elif member.isfile():
                    source = archive.extractfile(member)
                    assert source is not None
                    if name in METADATA:
                        if member.size > MAX_METADATA:
                            raise ManifestError(f"{self.where}: {name} is too large; refused")
                        self._meta[name] = source.read()
                        continue
                    count += 1
                    _check_room(spool, member.size, f"{self.where}: member {name}")
                    self._files[name] = self._spool(source, os.path.join(spool, f"src-{count}"))
        except tarfile.TarError as exc:
            raise ManifestError(f"{self.where}: damaged archive: {exc}") from None
        finally:
            archive.close()

    def _spool(self, source: object, path: str) -> BlobFile:
        h = hashlib.sha256()
        with open(path, "wb") as out:
            while chunk := source.read(CHUNK):  # type: ignore[attr-defined]
                h.update(chunk)
                out.write(chunk)
        digest = "sha256:" + h.hexdigest()
        if digest in self._by_digest:  # the same bytes twice (legacy duplicate layers)
            os.unlink(path)
            return self._by_digest[digest]
        blob = BlobFile(path, owned=True, digest_seen=digest)
        self._by_digest[digest] = blob
        return blob

    def _member(self, name: str) -> BlobFile:
        seen = 0
        while name in self._links:
            name = self._links[name]
            seen += 1
            if seen > 16:
                raise ManifestError(f"{self.where}: link loop at {name}")
        if name not in self._files:
            raise NotFoundError(f"{self.where}: member {name} missing")
        return self._files[name]

    def _read_member(self, name: str, cap: int = MAX_METADATA) -> bytes:
        blob = self._member(name)
        if os.path.getsize(blob.path) > cap:
            raise ManifestError(f"{self.where}: {name} is too large; refused")
        with open(blob.path, "rb") as f:
            return f.read()

    # -- the Source protocol -----------------------------------------------------------------

    def entries(self) -> list[Entry]:
        found: list[Entry] = []
        if "index.json" in self._meta:
            try:
                index = json.loads(self._meta["index.json"])
                manifests = [m for m in index["manifests"] if isinstance(m, dict)]
            except (ValueError, KeyError, TypeError):
                raise ManifestError(f"{self.where}: index.json is malformed") from None
            for m in manifests:
                annotations = m.get("annotations") or {}
                digest = m.get("digest")
                if not isinstance(digest, str) or not DIGEST_RE.match(digest):
                    raise ManifestError(f"{self.where}: index.json: bad digest {digest!r}")
                ref = name_of(annotations.get(IMAGE_NAME), annotations.get(REF_NAME))
                found.append(Entry(ref, digest))
        elif "manifest.json" in self._meta:
            found = self._legacy_entries()
        else:
            raise ManifestError(f"{self.where}: neither index.json nor manifest.json; not an "
                                "image archive")
        if self.select:
            chosen = [e for e in found if self.select in (
                e.ref.repo_tag, str(e.ref), f"{e.ref.name}:{e.ref.tag}",
                normalized_name(e.ref.repo_tag) if e.ref.repo_tag else None)]
            if not chosen:
                names = ", ".join(sorted(str(e.ref.repo_tag) for e in found))
                raise NotFoundError(f"{self.where}: no image {self.select!r} (it has: {names})")
            return chosen
        return found

    def _legacy_entries(self) -> list[Entry]:
        try:
            items = json.loads(self._meta["manifest.json"])
            assert isinstance(items, list)
        except (ValueError, AssertionError):
            raise ManifestError(f"{self.where}: manifest.json is malformed") from None
        found = []
        for item in items:
            if not isinstance(item, dict) or "Config" not in item or "Layers" not in item:
                raise ManifestError(f"{self.where}: manifest.json entry lacks Config/Layers")
            config = self._read_member(safe_name(str(item["Config"]), self.where))
            config_digest = sha256_of(config)
            ids = mt.config_diff_ids(config, self.where)
            layers = []
            for rel in item["Layers"]:
                blob = self._member(safe_name(str(rel), self.where))
                assert blob.digest_seen is not None
                layers.append((blob.digest_seen, os.path.getsize(blob.path), blob))
            if len(ids) != len(layers):
                raise ManifestError(f"{self.where}: {len(layers)} layers, {len(ids)} diff_ids")
            body = synthesize(config, config_digest, [(d, s) for d, s, _ in layers])
            doc = json.loads(body)
            for entry, (_, _, blob) in zip(doc["layers"], layers, strict=True):
                entry["mediaType"] = sniff_layer_type(blob.path)
            body = json.dumps(doc, indent=3).encode()
            got = resolved_from_bytes(body, mt.OCI_MANIFEST, self.where)
            self._synthetic[got.digest] = got
            self._configs[config_digest] = config
            tags = item.get("RepoTags") or [None]
            found.append(Entry(name_of(tags[0], None), got.digest))
        return found

    def fetch_manifest(self, reference: str) -> Resolved:
        if reference in self._synthetic:
            return self._synthetic[reference]
        if not DIGEST_RE.match(reference):
            raise ManifestError(f"{self.where}: bad manifest reference {reference!r}")
        body = self._read_member(f"blobs/sha256/{reference[7:]}")
        return resolved_from_bytes(body, "", self.where, expect=reference)

    def get_blob(self, digest: str) -> bytes:
        if digest in self._configs:
            return self._configs[digest]
        if not DIGEST_RE.match(digest):
            raise ManifestError(f"{self.where}: bad digest {digest!r}")
        return check_blob(self._read_member(f"blobs/sha256/{digest[7:]}", 16 * 2**20), digest,
                          self.where)

    def blob_file(self, digest: str) -> BlobFile:
        blob = self._by_digest.get(digest)
        if blob is None:
            raise NotFoundError(f"{self.where}: blob {digest} missing from the archive")
        return blob

    def close(self) -> None:
        pass
