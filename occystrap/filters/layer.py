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

import tarfile
from dataclasses import dataclass, field

from occystrap import layerio
from occystrap.filters import FilterChain, Search
from occystrap.filters.exclude import Exclude
from occystrap.filters.normalize_timestamps import NormalizeTimestamps
from occystrap.messages import SearchHit
from occystrap.tarmembers import ChunkReader, members, normalize, open_stream

#: PAX records that tarfile rewrites from the member's own fields, or that describe an
#: encoding the rewritten member no longer has. Not "mtime": a source's record is kept
#: verbatim (tarfile's float would round nanoseconds); normalize-timestamps drops it.
MIRRORED = frozenset({"path", "linkpath", "size", "uid", "gid", "uname", "gname",
                      "hdrcharset"})
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
        self.dropped: set[str] = set()

    def keep(self, member: tarfile.TarInfo) -> bool:
        if member.islnk() and normalize(member.linkname) in self.dropped:
            self.dropped.add(normalize(member.name))  # its data went with its target
            return False
        for position, step in self.steps:
            if isinstance(step, Search):
                hit = step.hit(member)
                if hit is not None:
                    self.hits[position].append(hit)
            elif isinstance(step, NormalizeTimestamps | Exclude) and not step.member(member):
                self.dropped.add(normalize(member.name))
                return False
        return True


def _write_member(sink: layerio.LayerSink, tar: tarfile.TarFile,
                  member: tarfile.TarInfo) -> None:
    member.pax_headers = {k: v for k, v in member.pax_headers.items()
                          if k not in MIRRORED and not k.startswith("GNU.sparse.")}
    has_data = member.isreg()
    # Opened before the member is turned into a regular file: tarfile reads a sparse
    # member's data through its sparse map, and gives it back whole.
    data = tar.extractfile(member) if has_data else None
    if member.issparse():
        member.type, member.sparse = tarfile.REGTYPE, None
    if not has_data:
        member.size = 0
    sink.write(member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    if data is None:
        return
    copied = 0
    while chunk := data.read(layerio.CHUNK):
        sink.write(chunk)
        copied += len(chunk)
    if copied != member.size:
        raise ValueError(f"{member.name}: {copied} bytes of {member.size}")
    sink.write(b"\0" * (-member.size % BLOCK))


def _end_archive(sink: layerio.LayerSink) -> None:
    """Two zero blocks, padded to a whole record, as tar and tarfile end an archive."""
    end = 2 * BLOCK
    end += -(sink.plain_size + end) % tarfile.RECORDSIZE
    sink.write(b"\0" * end)


def filter_layer(path: str, offset: int, length: int, compression: str, chain: FilterChain,
                 out: str | None, target: str, level: int | None) -> FilteredLayer:
    """Run the layer in `path` (or its region at `offset`) through `chain`; write the result
    to `out` in `target` compression unless `out` is None (look only)."""
    steps = _Chain(chain)
    with open(path, "rb") as raw:
        f = layerio.Slice(raw, offset, length) if offset >= 0 else raw
        chunks = layerio.decompressed_chunks(f, compression)  # type: ignore[arg-type]
        sink = layerio.LayerSink(out, target, level) if out is not None else None
        try:
            if chain.rewrites:
                assert sink is not None
                reader = ChunkReader(chunks)
                with open_stream(reader) as tar:
                    for member in members(tar):
                        if steps.keep(member):
                            _write_member(sink, tar, member)
                _end_archive(sink)
            else:
                reader = ChunkReader(chunks, tee=sink.write if sink is not None else None)
                if steps.hits:
                    with open_stream(reader) as tar:
                        for member in members(tar):
                            steps.keep(member)
            reader.drain()  # the rest (end blocks, padding) counts for the diff_id
        except BaseException:
            if sink is not None:
                sink.abandon()
            raise
    result = FilteredLayer(input_diff_id=reader.digest, input_size=reader.count,
                           diff_id=reader.digest, plain_size=reader.count, hits=steps.hits)
    if sink is not None:
        result.digest, result.size, result.diff_id = sink.close()
        result.plain_size = sink.plain_size
    return result
