"""tar://PATH[#NAME:TAG] as a source: what `docker save` writes (legacy, or Docker ≥25's OCI
layout with `manifest.json` at the end), skopeo's docker-archive, and our own tar://.

One pass over the archive: the metadata files are kept (small, capped) and the metadata may
come last. An uncompressed archive in a regular file is read in place: the pass reads only
the tar headers (seeking over member data), and the members are then hashed side by side, one
thread per core, where they lie; fetch later copies each layer's region (checking its digest
again: the file is the user's). A pipe (`tar:///dev/stdin`), a compressed archive or an
engine's export stream is read once, every regular member spooled to a file while it is
hashed. Either way no layer is ever held in memory. Member names and links are
checked as they stream by: an absolute path, a `..` or a link that leaves the archive is
refused, whatever Python's tarfile would allow. What the metadata means, and what happens
when its files disagree, is `dockersave`'s business; messages name the archive and the
member (`tar:///srv/app.tar: blobs/sha256/…: …`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from occystrap import mediatypes as mt
from occystrap.errors import (
    DestinationError,
    ImageError,
    ManifestError,
    NotFoundError,
    UsageError,
)
from occystrap.layers.codec import hash_region
from occystrap.mediatypes import ImageIndex
from occystrap.oci import blob_rel
from occystrap.reference import DIGEST_RE, digest_of_hash
from occystrap.sources.archiveimages import Reading
from occystrap.sources.base import BlobFile, Entry, Resolved, check_blob, resolved_from_bytes
from occystrap.sources.dockersave import ArchiveReader
from occystrap.sources.local import MAX_METADATA

METADATA = frozenset({"manifest.json", "index.json", "oci-layout", "repositories"})
CHUNK = 1 << 20
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
# what tarfile's "r|*" would decompress: such an archive is read as a stream, not in place
_COMPRESSED = (*_MAGIC, b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00")


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
        raise DestinationError(
            f"not enough free space in {spool} to spool {what}: need "
            f"{size / 2**20:.0f} MiB, have {free / 2**20:.0f} MiB "
            "(--temp-dir)"
        )


def compression_of_file(path: str, offset: int = 0) -> str:
    """`gzip`, `zstd` or `none`, from the first bytes of the file (or of its region at
    `offset`): a layer.tar says nothing else about itself."""
    with open(path, "rb") as f:
        f.seek(offset)
        head = f.read(4)
    for magic, compression in _MAGIC.items():
        if head.startswith(magic):
            return compression
    return "none"


def readable_in_place(path: str) -> bool:
    """A regular file holding an uncompressed tar (anything else is read as a stream)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # never opened: a FIFO's writer would lose its one reader
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return False  # the streaming open says why, in its words
    return not head.startswith(_COMPRESSED)


def size_of(blob: BlobFile) -> int:
    """The bytes of a blob: its region's, or its whole file's."""
    return blob.size if blob.size >= 0 else os.path.getsize(blob.path)


class TarballSource:
    local = True

    def __init__(
        self,
        path: str,
        select: str | None,
        spool: str,
        fileobj: BinaryIO | None = None,
        where: str | None = None,
    ) -> None:
        """`fileobj`: read this stream instead of `path` (a Docker engine's export)."""
        self.path = path
        self.select = select
        self.fileobj = fileobj
        self.where = where or f"tar://{path}"
        self._meta: dict[str, bytes] = {}
        self._files: dict[str, BlobFile] = {}
        self._links: dict[str, str] = {}
        self._by_digest: dict[str, BlobFile] = {}
        self._reading: Reading | None = None  # what dockersave made of the metadata
        self._broken: dict[str, str] = {}  # entry reference → why that image cannot be copied
        self.notes: list[str] = []  # what -v shows: where the archive's files disagreed
        self._read(spool)

    # -- the one pass ------------------------------------------------------------------------

    def _read(self, spool: str) -> None:
        in_place = self.fileobj is None and readable_in_place(self.path)
        regions: dict[str, tuple[int, int]] = {}  # member → (offset, size), read in place
        try:
            if self.fileobj is not None:
                archive = tarfile.open(fileobj=self.fileobj, mode="r|*")  # noqa: SIM115
            else:
                archive = (  # noqa: SIM115 - closed below
                    tarfile.open(self.path, mode="r:")  # headers only, seeking over data
                    if in_place
                    else tarfile.open(self.path, mode="r|*")
                )
        except FileNotFoundError:
            raise NotFoundError(f"{self.where}: no such file") from None
        except (tarfile.TarError, OSError) as exc:
            raise UsageError(f"{self.where}: not a readable tar archive: {exc}") from None
        count = 0
        last = -1  # the header offset of the member before: in place, each must be further on
        try:
            for member in archive:
                if in_place:
                    # a negative size makes tarfile seek back and read one header forever
                    # (CVE-2025-8194 in Pythons before 3.11.14): refuse it, as "r|*" does
                    if member.size < 0 or member.offset <= last:
                        raise ManifestError(
                            f"{self.where}: damaged archive: member {member.name!r} at byte "
                            f"{member.offset} has a bad size or position"
                        )
                    last = member.offset
                if member.isdir():
                    continue  # nothing read is a directory (`./` of `tar -C dir -cf x .`)
                name = safe_name(member.name, self.where)
                if member.issym() or member.islnk():
                    base = posixpath.dirname(name) if member.issym() else ""
                    self._links[name] = safe_name(
                        posixpath.join(base, member.linkname), f"{self.where}: link {name}"
                    )
                elif member.isfile():
                    source = archive.extractfile(member)
                    assert source is not None
                    if name in METADATA:
                        if member.size > MAX_METADATA:
                            raise ManifestError(
                                f"{self.where}: {name}: larger than "
                                f"{MAX_METADATA // 2**20} MiB; refused"
                            )
                        self._meta[name] = source.read()
                        continue
                    count += 1
                    if in_place and not member.issparse():
                        regions[name] = (member.offset_data, member.size)
                        continue
                    _check_room(spool, member.size, f"{self.where}: member {name}")
                    self._files[name] = self._spool(source, os.path.join(spool, f"src-{count}"))
        except tarfile.TarError as exc:
            raise ManifestError(f"{self.where}: damaged archive: {exc}") from None
        finally:
            archive.close()
        if regions:
            self._index(regions)

    def _index(self, regions: dict[str, tuple[int, int]]) -> None:
        """Hash the members read in place, side by side (reads and sha256 release the GIL);
        a member that runs past the end of the file is a damaged archive."""
        end = os.path.getsize(self.path)
        for name, (offset, size) in regions.items():
            if offset + size > end:
                raise ManifestError(
                    f"{self.where}: damaged archive: member {name} ends past the end of the file"
                )
        threads = max(1, min(len(regions), os.cpu_count() or 2, 8))
        with ThreadPoolExecutor(threads, thread_name_prefix="index") as pool:
            digests = pool.map(lambda r: hash_region(self.path, *r), regions.values())
            for (name, (offset, size)), digest in zip(regions.items(), digests, strict=True):
                blob = self._by_digest.get(digest)
                if blob is None:  # the same bytes twice: the first region serves both
                    blob = BlobFile(self.path, False, digest, offset, size)
                    self._by_digest[digest] = blob
                self._files[name] = blob

    def _spool(self, source: object, path: str) -> BlobFile:
        h = hashlib.sha256()
        with open(path, "wb") as out:
            while chunk := source.read(CHUNK):  # type: ignore[attr-defined]
                h.update(chunk)
                out.write(chunk)
        digest = digest_of_hash(h)
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
            raise NotFoundError(f"{self.where}: {name}: not in the archive")
        return self._files[name]

    def _read_member(self, name: str, cap: int = MAX_METADATA) -> bytes:
        blob = self._member(name)
        size = size_of(blob)
        if size > cap:
            raise ManifestError(f"{self.where}: {name}: larger than {cap // 2**20} MiB; refused")
        with open(blob.path, "rb") as f:
            f.seek(blob.offset)
            return f.read(size)

    # -- what dockersave.ArchiveReader reads through ------------------------------------------

    def digest_of(self, name: str) -> tuple[str, int, str]:
        blob = self._member(safe_name(name, self.where))
        assert blob.digest_seen is not None
        return blob.digest_seen, size_of(blob), compression_of_file(blob.path, blob.offset)

    def read(self, name: str) -> bytes:
        return self._read_member(safe_name(name, self.where))

    def blob_members(self) -> list[tuple[str, int]]:
        return [
            (name, size_of(blob))
            for name, blob in self._files.items()
            if name.startswith("blobs/sha256/")
        ]

    # -- the Source protocol -----------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every image the archive holds, by `dockersave`'s rules (an image that cannot be
        copied is an entry too: fetching its manifest raises why). `#NAME:TAG` picks one."""
        if self._reading is None:
            self._reading = ArchiveReader(self, self._meta).read()
            self.notes = list(self._reading.notes)
            self._broken = {o.reference: o.error for o in self._reading.offers if o.error}
        offers = self._reading.offers
        if self.select:
            offers = [o for o in offers if self.select in o.names]
            if not offers:
                names = ", ".join(
                    sorted(str(o.ref.repo_tag or o.ref) for o in self._reading.offers)
                )
                raise NotFoundError(f"{self.where}: no image {self.select!r} (it has: {names})")
        return [Entry(o.ref, o.reference, self) for o in offers]

    def platform_entries(self, entries: list[Entry]) -> list[Entry]:
        """--all-platforms into a destination that holds images but no index (tar://): each
        index becomes one entry per platform whose manifest is in the archive, and one per
        platform that is not, whose fetch fails saying so (so it is named among the failed
        images, not dropped). Attestation manifests describe an image; they are not one."""
        out = []
        for entry in entries:
            try:
                got = self.fetch_manifest(entry.reference)
            except ImageError:
                got = None  # fails again, with its reason, when resolve fetches it
            if got is None or not isinstance(got.parsed, ImageIndex):
                out.append(entry)
                continue
            out += [
                Entry(entry.ref, d.digest, self)
                for d in got.parsed.manifests
                if not mt.is_attestation(d)
            ]
        return out

    def fetch_manifest(self, reference: str) -> Resolved:
        if reference in self._broken:
            raise ManifestError(self._broken[reference])
        reading = self._reading
        if reading is not None and reference in reading.rebuilt:
            return reading.rebuilt[reference]
        if reading is not None and reference in reading.absent:
            raise NotFoundError(f"{self.where}: {reading.absent[reference]}")
        if not DIGEST_RE.match(reference):
            raise ManifestError(f"{self.where}: bad manifest reference {reference!r}")
        member = blob_rel(reference)
        return resolved_from_bytes(
            self._read_member(member), "", f"{self.where}: {member}", expect=reference
        )

    def get_blob(self, digest: str) -> bytes:
        if self._reading is not None and digest in self._reading.configs:
            return self._reading.configs[digest]
        if not DIGEST_RE.match(digest):
            raise ManifestError(f"{self.where}: bad digest {digest!r}")
        member = blob_rel(digest)
        return check_blob(self._read_member(member, 16 * 2**20), digest, f"{self.where}: {member}")

    def blob_file(self, digest: str) -> BlobFile:
        blob = self._by_digest.get(digest)
        if blob is None:
            raise NotFoundError(f"{self.where}: no member holds blob {digest}")
        return blob

    def close(self) -> None:
        pass
