"""Streaming decompression of spooled layers, hashing the uncompressed bytes as they pass.

zlib, zstandard and hashlib release the GIL on large buffers, so several layers can be
decompressed at once by threads of one process.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

from occystrap.errors import DigestError
from occystrap.files import start_writeback
from occystrap.reference import digest_of_hash

# isal and zstandard are imported where a layer is first decoded or encoded: a run that
# only moves blobs (registry, oci://, tar:// as fetched) never loads them.

CHUNK = 1 << 20
#: gzip input read and inflated output per call: each inflating thread holds about three of
#: these at once (input, output, the input's unconsumed tail)
INFLATE_CHUNK = 1 << 18
ISAL_LEVEL = 2  # gzip without --compression-level (see LayerSink)


def _read_chunks(f: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def decompressed_chunks(f: BinaryIO, compression: str) -> Iterator[bytes]:
    """Yield the uncompressed bytes of a layer in bounded chunks. A stream that is not what
    it says (corrupt deflate data, a bad zstd frame) is a ValueError, like a truncated one."""
    import zstandard
    from isal import isal_zlib

    try:
        yield from _decompressed(f, compression)
    # isal's stub declares `error` an instance of Exception; it is the class IsalError
    except (zlib.error, isal_zlib.error, zstandard.ZstdError) as exc:  # type: ignore[misc]
        raise ValueError(f"corrupt {compression} stream: {exc}") from None


def _decompressed(f: BinaryIO, compression: str) -> Iterator[bytes]:
    import zstandard
    from isal import isal_zlib

    if compression == "none":
        yield from _read_chunks(f)
    elif compression == "gzip":
        # ISA-L's inflate (zlib's API, about 1.5 times its speed). 16 + MAX_WBITS reads the
        # gzip header; a new decompressor per member handles multi-member streams (pigz,
        # concatenated gzip).
        d = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
        # A last, empty chunk: ISA-L may have taken all the input and still hold output past
        # max_length (python-isal issues 229, 248); calls with no input until one gives
        # nothing collect it, here and after every chunk.
        for chunk in itertools.chain(_read_chunks(f, INFLATE_CHUNK), [b""]):
            data = chunk
            while True:
                if d.eof:
                    if not data.strip(b"\0"):
                        break  # zero padding after the last member
                    d = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
                out = d.decompress(data, INFLATE_CHUNK)
                if out:
                    yield out
                data = d.unused_data if d.eof else d.unconsumed_tail
                if not data and (d.eof or not out):
                    break
        if not d.eof:
            raise ValueError("truncated gzip stream")
    elif compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            f, read_size=CHUNK, read_across_frames=True
        )
        while chunk := reader.read(CHUNK):
            yield chunk
    else:
        raise ValueError(f"unknown compression {compression!r}")


class Slice:
    """A read-only window `[offset, offset + length)` of a file: a blob inside a tarball."""

    def __init__(self, f: BinaryIO, offset: int, length: int) -> None:
        self._f = f
        self._left = length
        f.seek(offset)

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        return data


def decompress_file(
    src: str, compression: str, offset: int = -1, length: int = 0
) -> tuple[str, int]:
    """Hash the uncompressed bytes of `src` (or, with `offset` >= 0, of the `length` bytes
    there). Writing a layer in another encoding is `filters.layer.filter_layer`'s job.

    Returns the sha256 digest of the uncompressed bytes and their length.
    """
    h = hashlib.sha256()
    total = 0
    with open(src, "rb") as raw:
        f: BinaryIO = Slice(raw, offset, length) if offset >= 0 else raw  # type: ignore
        for chunk in decompressed_chunks(f, compression):
            h.update(chunk)
            total += len(chunk)
    return digest_of_hash(h), total


class LayerSink:
    """Uncompressed layer bytes in; the blob (`compression`: none, gzip or zstd) out to
    `path`, with the sha256 of both sides kept as they pass: the blob's digest and the
    layer's diff_id come out of the one pass that writes it.

    zstd uses every core (zstandard's own worker threads), gzip one core per layer (callers
    run several layers at once). gzip without a level is ISA-L's level 2: a little larger
    than zlib's level 6 (about 13% on binaries and text), more than ten times faster (what
    crane trades too, with Go's BestSpeed); a level (0-9) gets zlib at that level. Output
    depends only on the bytes, the settings and the library build (the gzip header is
    fixed), so a rewritten layer is reproducible.
    """

    def __init__(self, path: str, compression: str, level: int | None) -> None:
        self.blob_hash = hashlib.sha256()
        self.diff_hash = hashlib.sha256()
        self.size = 0
        self.plain_size = 0
        self._compress: Callable[[bytes], bytes] | None
        self._flush: Callable[[], bytes] | None
        import zstandard
        from isal import isal_zlib

        if compression == "gzip" and level is None:
            igz = isal_zlib.compressobj(ISAL_LEVEL, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
            self._compress, self._flush = igz.compress, igz.flush
        elif compression == "gzip" and level is not None:
            gz = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            self._compress, self._flush = gz.compress, gz.flush
        elif compression == "zstd":
            zc = zstandard.ZstdCompressor(
                level=3 if level is None else level, threads=-1
            ).compressobj()
            self._compress, self._flush = zc.compress, zc.flush
        elif compression == "none":
            self._compress = self._flush = None
        else:
            raise ValueError(f"unknown compression {compression!r}")
        self._out = open(path, "wb")  # noqa: SIM115 - closed by close()

    def _emit(self, data: bytes) -> None:
        if data:
            if self._compress is not None:  # uncompressed, the blob is the diff: one hash
                self.blob_hash.update(data)
            self._out.write(data)
            self.size += len(data)

    def write(self, data: bytes) -> None:
        self.diff_hash.update(data)
        self.plain_size += len(data)
        self._emit(self._compress(data) if self._compress is not None else data)

    def close(self) -> tuple[str, int, str]:
        """Finish the blob; returns its digest, its size and the diff_id."""
        try:
            if self._flush is not None:
                self._emit(self._flush())
        finally:
            self._out.close()
        diff_id = digest_of_hash(self.diff_hash)
        blob = digest_of_hash(self.blob_hash) if self._compress is not None else diff_id
        return blob, self.size, diff_id

    def abandon(self) -> None:
        self._out.close()


def hash_region(path: str, offset: int, size: int) -> str:
    """The sha256 digest of bytes [offset, offset + size) of `path`, read into one reused
    buffer (hashlib and the read release the GIL: regions hash side by side in threads).
    Raises EOFError when the file ends first."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    left = size
    with open(path, "rb") as f:
        f.seek(offset)
        while left and (n := f.readinto(view[: min(CHUNK, left)])):
            h.update(view[:n])
            left -= n
    if left:
        raise EOFError(f"{path} ends {left} bytes before the end of the region at {offset}")
    return digest_of_hash(h)


def copy_blob(
    src: str,
    dst: str,
    digest: str,
    size: int,
    offset: int | None,
    verify: bool,
    src_offset: int = 0,
) -> int:
    """Copy a local source's blob into `dst` (a new spool file, or with `offset` the blob's
    region of a tarball being assembled), checking its size and, with `verify`, its digest.

    Returns the bytes copied; raises DigestError on a mismatch (the region or file then holds
    garbage that the caller discards).
    """
    h = hashlib.sha256() if verify else None
    total = 0
    with open(src, "rb") as f:
        f.seek(src_offset)
        fd = (
            os.open(dst, os.O_WRONLY)
            if offset is not None
            else os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        )
        try:
            position = offset or 0
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            # Read exactly `size`: the source may be a region of a bigger file (a tarball).
            while total < size and (n := f.readinto(view[: min(CHUNK, size - total)])):
                chunk = view[:n]
                if h is not None:
                    h.update(chunk)
                while chunk:
                    written = os.pwrite(fd, chunk, position)
                    chunk, position = chunk[written:], position + written
                total += n
            if src_offset == 0 and f.read(1):
                raise DigestError(f"blob {digest} in {src}: more than {size} bytes")
            if offset is not None:  # a region of an archive, fsynced whole at its end
                start_writeback(fd, offset, total)
        finally:
            os.close(fd)
    if total != size:
        raise DigestError(f"blob {digest} in {src}: {total} bytes, expected {size}")
    if h is not None and digest_of_hash(h) != digest:
        raise DigestError(f"blob {digest} in {src}: content hashes to {digest_of_hash(h)}")
    return total
