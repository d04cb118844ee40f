"""One layer through the filter chain, streamed: decompress → tar members → filters →
(re-serialise → compress) → file, hashing on the way. Nothing larger than a chunk is held.

Three ways through, cheapest first:
- look only (search, inspect; the destination takes the blob as it is): members are
  parsed, the blob is not copied;
- pass through (no filter changes members, but the destination wants another encoding):
  the decompressed bytes are copied untouched to the new encoding while tarfile looks at
  them, so the diff_id stays the source's;
- rewrite (normalize-timestamps, exclude): each kept member is written anew in PAX format
  (a plain ustar header when nothing needs PAX), its records minus those that mirror header
  fields (tarfile writes those from the member) and minus sparse-file maps (a sparse
  member becomes a regular file). Extended attributes and other records stay.

Either way the input's diff_id is computed, so a filtered layer is also a verified one.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from typing import IO

from occystrap.files import unlink_quietly
from occystrap.filters import FilterChain
from occystrap.filters.exclude import Exclude
from occystrap.filters.normalize_timestamps import NormalizeTimestamps
from occystrap.filters.search import Search
from occystrap.layers import codec
from occystrap.layers.tarread import ChunkReader, members, normalize, open_stream
from occystrap.messages import SearchHit

#: PAX records that tarfile rewrites from the member's own fields, or that describe an
#: encoding the rewritten member no longer has. Not "mtime": a source's record is kept
#: verbatim (tarfile's float would round nanoseconds); normalize-timestamps drops it.
MIRRORED = frozenset({"path", "linkpath", "size", "uid", "gid", "uname", "gname", "hdrcharset"})
BLOCK = tarfile.BLOCKSIZE


@dataclass
class FilteredLayer:
    input_diff_id: str
    input_size: int  # uncompressed bytes read
    digest: str = ""  # of the blob written, if one was
    size: int = 0
    diff_id: str = ""  # of what was written (the input's when members were not rewritten)
    plain_size: int = 0  # uncompressed size of the layer as it leaves
    hits: dict[int, list[SearchHit]] = field(default_factory=dict)  # search position → hits


class _Chain:
    """The chain applied to the members of one layer."""

    def __init__(self, chain: FilterChain) -> None:
        self.steps = list(enumerate(chain.filters))
        self.hits: dict[int, list[SearchHit]] = {n: [] for n, _ in chain.searches}

    def keep(self, member: tarfile.TarInfo) -> bool:
        for position, step in self.steps:
            if isinstance(step, Search):
                hit = step.hit(member)
                if hit is not None:
                    self.hits[position].append(hit)
            elif isinstance(step, NormalizeTimestamps | Exclude) and not step.member(member):
                return False
        return True


def _write_member(sink: codec.LayerSink, member: tarfile.TarInfo, data: IO[bytes] | None) -> None:
    """The member's header, then `data` (its content, for a regular file)."""
    member.pax_headers = {
        k: v
        for k, v in member.pax_headers.items()
        if k not in MIRRORED and not k.startswith("GNU.sparse.")
    }
    if member.issparse():
        member.type, member.sparse = tarfile.REGTYPE, None
    if data is None:
        member.size = 0
    sink.write(member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    if data is None:
        return
    copied = 0
    while chunk := data.read(codec.CHUNK):
        sink.write(chunk)
        copied += len(chunk)
    if copied != member.size:
        raise ValueError(f"{member.name}: {copied} bytes of {member.size}")
    sink.write(b"\0" * (-member.size % BLOCK))


class _Rewrite:
    """The rewrite of one layer, member by member.

    A hard link carries no data: it names an earlier member that does. When exclude drops
    that member but keeps a link to it, the first kept link becomes a regular file holding
    the data (kept aside in a temp file while the stream moves on) and later links point at
    it. Which members are link targets is learnt from a first pass over the headers, so
    only their data is ever set aside.
    """

    def __init__(
        self, sink: codec.LayerSink, steps: _Chain, link_targets: set[str], scratch: str
    ) -> None:
        self.sink = sink
        self.steps = steps
        self.link_targets = link_targets
        self.scratch = scratch
        self.dropped: set[str] = set()
        self.held: dict[str, str] = {}  # dropped link target → temp file with its data
        self.moved: dict[str, str] = {}  # dropped link target → the link now holding it

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        target = normalize(member.linkname) if member.islnk() else None
        if target is not None and target in self.moved:
            member.linkname, target = self.moved[target], None
        # Opened before anything changes the member: tarfile reads a sparse member through
        # its sparse map and gives the data back whole.
        data = tar.extractfile(member) if member.isreg() else None
        name = normalize(member.name)
        if not self.steps.keep(member):
            self.dropped.add(name)
            if data is not None and name in self.link_targets:
                self.held[name] = self._hold(data)
            return
        if target is not None and target in self.held:
            held = self.held.pop(target)
            try:
                member.type, member.linkname = tarfile.REGTYPE, ""
                member.size = os.path.getsize(held)
                with open(held, "rb") as f:
                    _write_member(self.sink, member, f)
            finally:
                os.unlink(held)
            self.moved[target] = member.name
            return
        if target is not None and target in self.dropped:
            self.dropped.add(name)  # linked to something that held no data: nothing to keep
            return
        _write_member(self.sink, member, data)

    def _hold(self, data: IO[bytes]) -> str:
        path = f"{self.scratch}.held-{len(self.held)}-{len(self.dropped)}"
        with open(path, "wb") as f:
            while chunk := data.read(codec.CHUNK):
                f.write(chunk)
        return path

    def discard(self) -> None:
        for path in self.held.values():
            unlink_quietly(path)


def _link_targets(path: str, offset: int, length: int, compression: str) -> set[str]:
    """The names the layer's hard links point at: a first pass over its headers."""
    targets = set()
    with open(path, "rb") as raw:
        f = codec.Slice(raw, offset, length) if offset >= 0 else raw
        reader = ChunkReader(codec.decompressed_chunks(f, compression))  # type: ignore[arg-type]
        with open_stream(reader) as tar:
            for member in members(tar):
                if member.islnk():
                    targets.add(normalize(member.linkname))
    return targets


def _end_archive(sink: codec.LayerSink) -> None:
    """Two zero blocks, padded to a whole record, as tar and tarfile end an archive."""
    end = 2 * BLOCK
    end += -(sink.plain_size + end) % tarfile.RECORDSIZE
    sink.write(b"\0" * end)


def filter_layer(
    path: str,
    offset: int,
    length: int,
    compression: str,
    chain: FilterChain,
    out: str | None,
    target: str,
    level: int | None,
) -> FilteredLayer:
    """Run the layer in `path` (or its region at `offset`) through `chain`; write the result
    to `out` in `target` compression unless `out` is None (look only)."""
    steps = _Chain(chain)
    with open(path, "rb") as raw:
        f = codec.Slice(raw, offset, length) if offset >= 0 else raw
        chunks = codec.decompressed_chunks(f, compression)  # type: ignore[arg-type]
        sink = codec.LayerSink(out, target, level) if out is not None else None
        rewrite = None
        reader: ChunkReader | None
        try:
            if chain.rewrites:
                assert sink is not None and out is not None
                excludes = any(isinstance(f, Exclude) for f in chain.filters)
                targets = _link_targets(path, offset, length, compression) if excludes else set()
                rewrite = _Rewrite(sink, steps, targets, out)
                reader = ChunkReader(chunks)
                with open_stream(reader) as tar:
                    for member in members(tar):
                        rewrite.member(tar, member)
                _end_archive(sink)
            elif sink is not None and not steps.hits:
                # Only a new encoding: the bytes go straight through, the sink's diff_id is
                # the input's.
                for chunk in chunks:
                    sink.write(chunk)
                reader = None
            else:
                reader = ChunkReader(chunks, tee=sink.write if sink is not None else None)
                if steps.hits:
                    with open_stream(reader) as tar:
                        for member in members(tar):
                            steps.keep(member)
            if reader is not None:
                reader.drain()  # the rest (end blocks, padding) counts for the diff_id
        except BaseException:
            if sink is not None:
                sink.abandon()
            raise
        finally:
            if rewrite is not None:
                rewrite.discard()
    if reader is None:
        assert sink is not None
        digest, size, diff_id = sink.close()
        return FilteredLayer(
            input_diff_id=diff_id,
            input_size=sink.plain_size,
            digest=digest,
            size=size,
            diff_id=diff_id,
            plain_size=sink.plain_size,
            hits=steps.hits,
        )
    result = FilteredLayer(
        input_diff_id=reader.digest,
        input_size=reader.count,
        diff_id=reader.digest,
        plain_size=reader.count,
        hits=steps.hits,
    )
    if sink is not None:
        result.digest, result.size, result.diff_id = sink.close()
        result.plain_size = sink.plain_size
    return result
