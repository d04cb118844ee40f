"""Library exceptions met on bad input map to the error tree in one place; bugs do not."""

from __future__ import annotations

import errno
import http.client
import io
import json
import ssl
import tarfile
import zlib

import httpx
import msgspec
import pytest
import zstandard
from isal import isal_zlib

from occystrap.errors import (
    AuthError,
    DestinationError,
    DigestError,
    ImageError,
    ManifestError,
    NotFoundError,
    OccystrapError,
    PlatformError,
    RegistryError,
    TransientError,
    UsageError,
    from_library,
)


def _raised(f) -> BaseException:
    try:
        f()
    except BaseException as exc:  # noqa: BLE001 - the point is to catch what libraries raise
        return exc
    raise AssertionError("no exception")


@pytest.mark.parametrize(
    "make, kind, words",
    [
        (
            lambda: tarfile.open(fileobj=io.BytesIO(b"not a tar" * 100), mode="r:"),
            ImageError,
            "not a valid tar archive",
        ),
        (lambda: zlib.decompress(b"garbage"), ImageError, "corrupt compressed data"),
        (lambda: isal_zlib.decompress(b"garbage"), ImageError, "corrupt compressed data"),
        (
            lambda: zstandard.ZstdDecompressor().decompress(b"garbage"),
            ImageError,
            "corrupt compressed data",
        ),
        (lambda: __import__("gzip").decompress(b"garbage!"), ImageError, "corrupt compressed data"),
        (lambda: msgspec.json.decode(b"{"), ManifestError, "malformed JSON"),
        (lambda: json.loads("{"), ManifestError, "malformed JSON"),
        (lambda: b"\xff".decode(), ManifestError, "not valid UTF-8"),
        (lambda: msgspec.msgpack.encode(2**65), ManifestError, "out of range"),
        (
            lambda: (_ for _ in ()).throw(EOFError("Compressed file ended")),
            ImageError,
            "ends early",
        ),
        (
            lambda: (_ for _ in ()).throw(httpx.DecodingError("bad gzip")),
            RegistryError,
            "does not decode",
        ),
        (lambda: open("/nonexistent/occystrap/x"), ImageError, "No such file"),
        (
            lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device", "/o")),
            DestinationError,
            "cannot write /o: No space left on device",
        ),
    ],
)
def test_library_errors_map_to_one_line(make, kind, words) -> None:
    mapped = from_library(_raised(make), "layer sha256:ab")
    assert isinstance(mapped, kind), mapped
    text = str(mapped)
    assert text.startswith("layer sha256:ab: ") and words in text and "\n" not in text


@pytest.mark.parametrize(
    "bug",
    [KeyError("x"), AttributeError("y"), TypeError("z"), AssertionError(), ValueError("plain")],
)
def test_bugs_stay_bugs(bug: BaseException) -> None:
    assert from_library(bug) is None


def test_occystrap_errors_pass_through() -> None:
    err = ManifestError("as is")
    assert from_library(err, "ignored") is err
    assert isinstance(from_library(OSError(errno.EIO, "I/O error")), OccystrapError)


# -- failures during a request (network=True) -------------------------------------------------


def _cert_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    error.verify_message = "unable to get local issuer certificate"
    return error


def _wrapped_cert_error() -> httpx.ConnectError:
    try:
        try:
            raise _cert_error()
        except ssl.SSLError as inner:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]") from inner
    except httpx.ConnectError as outer:
        return outer


@pytest.mark.parametrize(
    "make, kind, reason",
    [
        (
            lambda: ConnectionResetError(104, "Connection reset by peer"),
            TransientError,
            "ConnectionResetError: [Errno 104] Connection reset by peer",
        ),
        (lambda: TimeoutError("timed out"), TransientError, "timed out"),
        (lambda: httpx.ReadTimeout("slow"), TransientError, "timed out"),
        (
            lambda: http.client.IncompleteRead(b"abc", 10),
            TransientError,
            "connection closed after 3 bytes of the body",
        ),
        (
            lambda: http.client.RemoteDisconnected("gone"),
            TransientError,
            "RemoteDisconnected: gone",
        ),
        (
            lambda: httpx.RemoteProtocolError("peer closed"),
            TransientError,
            "RemoteProtocolError: peer closed",
        ),
        (
            _cert_error,
            RegistryError,
            "TLS certificate verification failed (unable to get local "
            "issuer certificate); for a registry with its own CA use --ca-file, or --no-tls-verify",
        ),
        (
            _wrapped_cert_error,
            RegistryError,
            "TLS certificate verification failed (unable to get local issuer certificate)",
        ),
        (
            lambda: ValueError("Invalid header value b'Bearer sec\\nret'"),
            RegistryError,
            "the request is not valid HTTP (a header value or the URL; not shown)",
        ),
        (
            lambda: httpx.LocalProtocolError("Illegal header value b'sec'"),
            RegistryError,
            "the request is not valid HTTP",
        ),
    ],
)
def test_network_failures_map_to_one_line(make, kind, reason: str) -> None:
    mapped = from_library(make(), "GET https://r.test/v2/", network=True)
    assert mapped is not None and type(mapped) is kind, mapped
    assert str(mapped).startswith("GET https://r.test/v2/: " + reason)
    assert mapped.reason.startswith(reason) and "sec" not in str(mapped)
    assert mapped.retryable is (kind is TransientError)


def test_network_bugs_stay_bugs() -> None:
    assert from_library(KeyError("x"), network=True) is None


def test_retryable_and_exit_codes_are_decided_in_the_tree() -> None:
    transient = TransientError("GET x: 503", 4.0, host="r.test", status=503)
    assert transient.retryable and transient.exit_code == 1 and transient.kind == "TransientError"
    final = transient.spent(3)
    assert str(final) == "GET x: 503 after 3 attempts" and not final.retryable
    assert (final.host, final.status, final.retry_after, final.attempts) == ("r.test", 503, 4.0, 3)
    assert UsageError("bad flag").exit_code == 2
    for cls in (
        ImageError,
        NotFoundError,
        DigestError,
        ManifestError,
        PlatformError,
        AuthError,
        RegistryError,
        DestinationError,
    ):
        error = cls("x", host="h", status=404, code="C")
        assert not error.retryable and error.exit_code == 1 and error.reason == "x"
        assert (error.host, error.status, error.code) == ("h", 404, "C")
        assert cls.__doc__, cls


def test_errors_survive_pickling_with_their_message() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(NotFoundError("manifest a:1 not found", host="h")))
    assert str(error) == "manifest a:1 not found" and isinstance(error, NotFoundError)
