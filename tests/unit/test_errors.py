"""Library exceptions met on bad input map to the error tree in one place; bugs do not."""

from __future__ import annotations

import errno
import io
import json
import tarfile
import zlib

import httpx
import msgspec
import pytest
import zstandard
from isal import isal_zlib

from occystrap.errors import (
    DestinationError,
    ImageError,
    ManifestError,
    OccystrapError,
    RegistryError,
    from_library,
)


def _raised(f) -> BaseException:
    try:
        f()
    except BaseException as exc:  # noqa: BLE001 - the point is to catch what libraries raise
        return exc
    raise AssertionError("no exception")


@pytest.mark.parametrize("make, kind, words", [
    (lambda: tarfile.open(fileobj=io.BytesIO(b"not a tar" * 100), mode="r:"), ImageError,
     "not a valid tar archive"),
    (lambda: zlib.decompress(b"garbage"), ImageError, "corrupt compressed data"),
    (lambda: isal_zlib.decompress(b"garbage"), ImageError, "corrupt compressed data"),
    (lambda: zstandard.ZstdDecompressor().decompress(b"garbage"), ImageError,
     "corrupt compressed data"),
    (lambda: __import__("gzip").decompress(b"garbage!"), ImageError, "corrupt compressed data"),
    (lambda: msgspec.json.decode(b"{"), ManifestError, "malformed JSON"),
    (lambda: json.loads("{"), ManifestError, "malformed JSON"),
    (lambda: b"\xff".decode(), ManifestError, "not valid UTF-8"),
    (lambda: msgspec.msgpack.encode(2**65), ManifestError, "out of range"),
    (lambda: (_ for _ in ()).throw(EOFError("Compressed file ended")), ImageError,
     "ends early"),
    (lambda: (_ for _ in ()).throw(httpx.DecodingError("bad gzip")), RegistryError,
     "does not decode"),
    (lambda: open("/nonexistent/occystrap/x"), ImageError, "No such file"),
    (lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device", "/o")),
     DestinationError, "cannot write /o: No space left on device"),
])
def test_library_errors_map_to_one_line(make, kind, words) -> None:
    mapped = from_library(_raised(make), "layer sha256:ab")
    assert isinstance(mapped, kind), mapped
    text = str(mapped)
    assert text.startswith("layer sha256:ab: ") and words in text and "\n" not in text


@pytest.mark.parametrize("bug", [KeyError("x"), AttributeError("y"), TypeError("z"),
                                 AssertionError(), ValueError("plain")])
def test_bugs_stay_bugs(bug: BaseException) -> None:
    assert from_library(bug) is None


def test_occystrap_errors_pass_through() -> None:
    err = ManifestError("as is")
    assert from_library(err, "ignored") is err
    assert isinstance(from_library(OSError(errno.EIO, "I/O error")), OccystrapError)
