"""Small HTTP bodies read within a cap, as the bytes that came over the wire.

Manifests, configs, token answers, catalog and tag pages, error bodies and the Quay API are
read into memory, so each read has a cap. A cap checked after decoding is no cap at all: a
32 KiB answer with `Content-Encoding: zstd` (or gzip, br) can decode to a GiB in a single
chunk. So every request asks for `Accept-Encoding: identity` (`IDENTITY`), bodies are read
raw (`iter_raw`, never decoded), and an answer that is encoded anyway is refused with
`EncodedAnswer`: nothing is decoded, so a body that claims an encoding and is not one (bad
gzip) cannot fail in a decoder either. Blob downloads never decode (their digest is of the
bytes as stored), so they are not concerned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Request headers for every request whose answer is read into memory.
IDENTITY = {"Accept-Encoding": "identity"}

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
        return (f"the answer is encoded ({self.encoding}) although identity was asked for; "
                "refused (it could expand without bound)")


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
