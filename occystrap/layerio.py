"""Streaming decompression of spooled layers, hashing the uncompressed bytes as they pass.

zlib, zstandard and hashlib release the GIL on large buffers, so several layers can be
decompressed at once by threads of one process.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import zstandard

from occystrap.errors import DigestError

CHUNK = 1 << 20


def _read_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


def decompressed_chunks(f: BinaryIO, compression: str) -> Iterator[bytes]:
    """Yield the uncompressed bytes of a layer in bounded chunks."""
    if compression == "none":
        yield from _read_chunks(f)
    elif compression == "gzip":
        # 16 + MAX_WBITS reads the gzip header; a new decompressor per member handles
        # multi-member streams (pigz, concatenated gzip).
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        for chunk in _read_chunks(f):
            data = chunk
            while data:
                if d.eof:
                    if not data.strip(b"\0"):
                        break  # zero padding after the last member
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = d.decompress(data, CHUNK)
                if out:
                    yield out
                data = d.unused_data if d.eof else d.unconsumed_tail
        if not d.eof:
            raise ValueError("truncated gzip stream")
    elif compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(f, read_size=CHUNK,
                                                            read_across_frames=True)
        while chunk := reader.read(CHUNK):
            yield chunk
    else:
        raise ValueError(f"unknown compression {compression!r}")


class _Slice:
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


def decompress_file(src: str, dst: str | None, compression: str, offset: int = -1,
                    length: int = 0) -> tuple[str, int]:
    """Decompress `src` (or, with `offset` >= 0, the `length` bytes there) into `dst`, or
    only hash it when `dst` is None.

    Returns the sha256 digest of the uncompressed bytes and their length.
    """
    h = hashlib.sha256()
    total = 0
    with open(src, "rb") as raw:
        f: BinaryIO = _Slice(raw, offset, length) if offset >= 0 else raw  # type: ignore
        out = open(dst, "wb") if dst else None  # noqa: SIM115
        try:
            for chunk in decompressed_chunks(f, compression):
                h.update(chunk)
                total += len(chunk)
                if out is not None:
                    out.write(chunk)
        finally:
            if out is not None:
                out.close()
    return f"sha256:{h.hexdigest()}", total


def recompress_file(src: str, dst: str, source: str, target: str, level: int | None
                    ) -> tuple[str, int, str]:
    """Re-encode the layer in `src` (compression `source`) into `dst` as `target`.

    Streams in bounded chunks; zstd uses every core (zstandard's own worker threads), gzip
    one core per layer (callers run several layers at once). Returns the new blob's digest,
    its size, and the diff_id of the uncompressed content.
    """
    blob_hash = hashlib.sha256()
    diff_hash = hashlib.sha256()
    size = 0
    if target == "gzip":
        gz = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        compress, flush = gz.compress, gz.flush
    elif target == "zstd":
        zc = zstandard.ZstdCompressor(level=3 if level is None else level,
                                      threads=-1).compressobj()
        compress, flush = zc.compress, zc.flush
    else:
        raise ValueError(f"unknown compression {target!r}")
    with open(src, "rb") as f, open(dst, "wb") as out:
        def emit(data: bytes) -> None:
            nonlocal size
            if data:
                blob_hash.update(data)
                out.write(data)
                size += len(data)

        for chunk in decompressed_chunks(f, source):
            diff_hash.update(chunk)
            emit(compress(chunk))
        emit(flush())
    return f"sha256:{blob_hash.hexdigest()}", size, f"sha256:{diff_hash.hexdigest()}"


def copy_blob(src: str, dst: str, digest: str, size: int, offset: int | None,
              verify: bool, src_offset: int = 0) -> int:
    """Copy a local source's blob into `dst` (a new spool file, or with `offset` the blob's
    region of a tarball being assembled), checking its size and, with `verify`, its digest.

    Returns the bytes copied; raises DigestError on a mismatch (the region or file then holds
    garbage that the caller discards).
    """
    h = hashlib.sha256() if verify else None
    total = 0
    with open(src, "rb") as f:
        f.seek(src_offset)
        fd = os.open(dst, os.O_WRONLY) if offset is not None else \
            os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            position = offset or 0
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            # Read exactly `size`: the source may be a region of a bigger file (a tarball).
            while total < size and (n := f.readinto(view[:min(CHUNK, size - total)])):
                chunk = view[:n]
                if h is not None:
                    h.update(chunk)
                while chunk:
                    written = os.pwrite(fd, chunk, position)
                    chunk, position = chunk[written:], position + written
                total += n
            if src_offset == 0 and f.read(1):
                raise DigestError(f"blob {digest} in {src}: more than {size} bytes")
        finally:
            os.close(fd)
    if total != size:
        raise DigestError(f"blob {digest} in {src}: {total} bytes, expected {size}")
    if h is not None and f"sha256:{h.hexdigest()}" != digest:
        raise DigestError(f"blob {digest} in {src}: content hashes to sha256:{h.hexdigest()}")
    return total
