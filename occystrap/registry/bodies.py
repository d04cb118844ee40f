"""HTTP bodies outside the transport: small answers read within a cap, and file regions
sent as request bodies.

Small answers. Manifests, configs, token answers, catalog and tag pages, error bodies and the
Quay API are read into memory, so each read has a cap. A cap checked after decoding is no cap
at all: a 32 KiB answer with `Content-Encoding: zstd` (or gzip, br) can decode to a GiB in a single
chunk. So every request asks for `Accept-Encoding: identity` (`IDENTITY`), bodies are read
raw (`iter_raw`, never decoded), and an answer that is encoded anyway is refused with
`EncodedAnswer`: nothing is decoded, so a body that claims an encoding and is not one (bad
gzip) cannot fail in a decoder either. Blob downloads never decode (their digest is of the
bytes as stored), so they are not concerned.

Request bodies. A blob upload sends a region of a file (a spool file, or a blob inside a
tarball) without loading it: `FileRegion`, which the transports stream (sendfile on plain
HTTP, a reused 1 MiB buffer under TLS or through httpx).
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping

import msgspec

#: Request headers for every request whose answer is read into memory.
IDENTITY = {"Accept-Encoding": "identity"}

BLOB_BUFFER = 2**20  # the read (and TLS send) buffer of blob bodies
SENDFILE_SLICE = 8 * 2**20

_TOKEN = re.compile(r"^[A-Za-z0-9._+-]{1,32}$")


class EncodedAnswer(Exception):
    """The answer came with a Content-Encoding although identity was asked for.

    `encoding` is fit to print: the header's value when it is a short token (`zstd`,
    `gzip`), else "an unknown encoding" (a hostile value is never echoed).
    """

    def __init__(self, value: str) -> None:
        value = value.strip()
        self.encoding = value if _TOKEN.match(value) else "an unknown encoding"
        super().__init__(self.encoding)

    def describe(self) -> str:
        """The reason, for a message that already names the request."""
        return (
            f"the answer is encoded ({self.encoding}) although identity was asked for; "
            "refused (it could expand without bound)"
        )


def check_identity(headers: Mapping[str, str]) -> None:
    """Raise EncodedAnswer unless `headers` say the body is not encoded."""
    value = headers.get("content-encoding") or ""
    if value.strip().lower() not in ("", "identity"):
        raise EncodedAnswer(value)


def read_raw(chunks: Iterable[bytes], cap: int) -> bytes:
    """Join `chunks` (raw bytes off the wire) but stop past `cap`: at most `cap` + 1 bytes
    come back, so `len(result) > cap` says the body was larger than allowed."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > cap:
            break
    return bytes(data[: cap + 1])


class ShortSource(Exception):
    """The file to upload is shorter than the blob: a local fault, never worth a retry."""


class FileRegion(msgspec.Struct, frozen=True):
    """Bytes [offset, offset+size) of a file, sent as a request body without loading them.

    Plain HTTP uses sendfile (the kernel copies page cache to socket); TLS reads 1 MiB at a
    time into one reused buffer, since sendfile cannot encrypt. Either way memory stays flat
    however big the blob or the tarball it lives in. `on_progress(n)` after each piece.

    `growing(need)`: the file is still being written (a blob in flight): before each piece,
    block until it holds at least `need` bytes (a file offset) and return how many it holds;
    whatever it raises abandons the request.
    """

    path: str
    offset: int
    size: int
    on_progress: Callable[[int], None] | None = None
    growing: Callable[[int], int] | None = None

    def _opened(self) -> None:
        """A growing file may not exist yet: wait for its first byte to send."""
        if self.growing is not None and self.size:
            self.growing(self.offset + 1)

    def _limit(self, pos: int, end: int, piece: int) -> int:
        """How far the next piece from `pos` may go: `piece` bytes, less when the file is
        still growing and holds fewer."""
        stop = min(pos + piece, end)
        if self.growing is not None:
            stop = min(stop, self.growing(pos + 1))
        return stop

    def send(self, sock: socket.socket | None) -> None:
        if sock is None:
            raise ConnectionError("connection closed before the body was sent")
        report = self.on_progress
        pos, end = self.offset, self.offset + self.size
        self._opened()
        with open(self.path, "rb") as f:
            if not isinstance(sock, ssl.SSLSocket):
                while pos < end:
                    n = sock.sendfile(f, pos, self._limit(pos, end, SENDFILE_SLICE) - pos)
                    if not n:
                        raise ShortSource(f"{self.path} ends before byte {end}")
                    pos += n
                    if report is not None:
                        report(n)
                return
            buffer = bytearray(BLOB_BUFFER)
            view = memoryview(buffer)
            f.seek(pos)
            while pos < end:
                n = f.readinto(view[: self._limit(pos, end, len(buffer)) - pos])
                if not n:
                    raise ShortSource(f"{self.path} ends before byte {end}")
                sock.sendall(view[:n])
                pos += n
                if report is not None:
                    report(n)

    def chunks(self) -> Iterator[bytes]:
        """The same bytes for httpx (the proxy path), in 1 MiB pieces."""
        report = self.on_progress
        pos, end = self.offset, self.offset + self.size
        self._opened()
        with open(self.path, "rb") as f:
            f.seek(pos)
            while pos < end:
                data = f.read(self._limit(pos, end, BLOB_BUFFER) - pos)
                if not data:
                    raise ShortSource(f"{self.path} ends before byte {end}")
                pos += len(data)
                if report is not None:
                    report(len(data))
                yield data
