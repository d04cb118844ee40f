"""The exception tree.

Every error a user can cause or meet carries a one-line message that says what went wrong and
where; the CLI prints that line and exits without a traceback. Anything outside this tree is a
bug and is shown with its traceback.

    OccystrapError                 one-line message, exit code 1
    ├── UsageError                 malformed URI, bad flag value            (exit 2)
    ├── ImageError                 this image cannot be copied; other images go on
    │   ├── NotFoundError          manifest or blob answered 404
    │   ├── ManifestError          malformed, unsupported (schema1) or unknown media type
    │   ├── PlatformError          no manifest in the index matches --platform
    │   └── DigestError            content does not hash to the digest that named it
    ├── AuthError                  credentials refused, token flow failed
    ├── RegistryError              the registry answered something we cannot use
    │   └── TransientError         worth retrying: connection reset, timeout, 5xx, 429
    └── DestinationError           cannot write the output (permissions, disk full, exists)

Two policies are decided here and nowhere else: `exit_code` (a class attribute) and
`retryable` (whether asking again may help: only a TransientError whose retries are not yet
spent). The retry layer (`registry/retry.py: retrying`) reads `retryable`; the CLI reads
`exit_code`.

Errors carry data besides their message, as keyword arguments (all optional, None when not
known): `host` (the registry or server), `image` (the repository, with its reference when
known), `status` (the HTTP status that caused it), `code` (the registry's own error code
from its JSON answer, e.g. `MANIFEST_UNKNOWN`). `reason` is the message without the
`where` prefix `from_library` gives it ("timed out" in "GET https://…: timed out").

`from_library` maps what libraries raise on bad input or a bad environment (tarfile,
zlib/ISA-L/zstd, msgspec and json, httpx decoding, OS errors) and, with `network=True`, what
ssl, socket, http.client and httpx raise during a request, into this tree, in one place, so
every stage fails the one image with one line; only what it does not know stays a bug.
"""

from __future__ import annotations

import sys
from typing import Any


class OccystrapError(Exception):
    """Base for every error that is the user's or the environment's, not ours."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        image: str | None = None,
        status: int | None = None,
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.image = image
        self.status = status
        self.code = code
        self.reason = message if reason is None else reason

    @property
    def retryable(self) -> bool:
        """Whether asking again may cure it; only TransientError says yes."""
        return False

    @property
    def kind(self) -> str:
        """The class name, for counting failures by kind once the message is a string."""
        return type(self).__name__


class UsageError(OccystrapError):
    """The command line is wrong: a malformed URI, flag value or combination (exit 2)."""

    exit_code = 2


class ImageError(OccystrapError):
    """This image cannot be copied (its data is bad or unreadable); other images go on.

    Raised as such for what a library finds wrong with an image's bytes (`from_library`:
    a broken tar, corrupt compressed data, a truncated stream, an unreadable file)."""


class NotFoundError(ImageError):
    """A manifest, blob, tag list or file the image needs does not exist (404, ENOENT)."""


class ManifestError(ImageError):
    """A manifest, index or config that is malformed, too large or of an unsupported kind
    (schema1, an unknown media type), or a reference that cannot name one."""


class PlatformError(ImageError):
    """No manifest in an index matches the platform asked for (--platform)."""


class DigestError(ImageError):
    """Content does not hash to (or is not the size of) the digest that named it, or the
    registry refused a digest we computed."""


class AuthError(OccystrapError):
    """Credentials refused (401/403), or the token flow failed: no usable challenge or realm,
    a downgrade to plain HTTP, a malformed token."""


class RegistryError(OccystrapError):
    """The registry or a server on its behalf answered something we cannot use, or could not
    be reached in a way that asking again will not cure (TLS verification, a request that
    is not valid HTTP)."""


class TransientError(RegistryError):
    """A failure a retry may cure: connection reset or refused, timeout, 5xx, 408, 429.

    Raised where the failure happens; `retry_after` is the server's hint in seconds. The
    retry layer retries it while the budget lasts, then raises a new one with `attempts`
    set (the message says "after N attempts"): that one is final, no longer `retryable`.
    """

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        attempts: int | None = None,
        host: str | None = None,
        image: str | None = None,
        status: int | None = None,
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, host=host, image=image, status=status, code=code, reason=reason)
        self.retry_after = retry_after
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        return self.attempts is None

    def spent(self, attempts: int, message: str | None = None) -> TransientError:
        """The final error once `attempts` tries all failed: by default this message with
        "after N attempts", the same data, no longer retryable."""
        return TransientError(
            message or f"{self} after {attempts} attempts",
            self.retry_after,
            attempts=attempts,
            host=self.host,
            image=self.image,
            status=self.status,
            code=self.code,
            reason=self.reason,
        )


class DestinationError(OccystrapError):
    """The output cannot be written: permissions, a full or read-only disk, a path taken."""


_SPACE = frozenset({"ENOSPC", "EDQUOT", "EROFS"})


def _line(exc: BaseException) -> str:
    """The library's own words, on one line and short (some quote whole inputs)."""
    text = " ".join(str(exc).split())
    return text[:200] + "…" if len(text) > 200 else text


def from_library(
    exc: BaseException, where: str = "", *, network: bool = False
) -> OccystrapError | None:
    """The OccystrapError for `exc` when it is a library's verdict on bad input or a bad
    environment, prefixed with `where` (what was being read: "layer sha256:…", or the
    request: "GET https://…"); None when it is a bug, to be reported with its traceback. An
    OccystrapError comes back as is.

    With `network=True` `exc` was met while sending a request or reading its answer
    (`_network` below: TLS verification and malformed requests are RegistryErrors, every
    other failure a retryable TransientError). Otherwise: tarfile errors, truncated
    streams (EOFError) and corrupt compressed data (zlib, ISA-L, zstd, gzip, lzma) are the
    image's fault (ImageError); malformed JSON or text that is not UTF-8 a ManifestError;
    numbers too large for 64 bits (msgpack, struct) a ManifestError; an answer httpx cannot
    decode a RegistryError; a full or read-only disk a DestinationError; any other OSError
    an ImageError naming the file and the reason.
    """
    if isinstance(exc, OccystrapError):
        return exc
    prefix = f"{where}: " if where else ""
    if network:
        return _network(exc, prefix)
    return _local(exc, prefix)


def _local(exc: BaseException, prefix: str) -> OccystrapError | None:
    import errno
    import json
    import lzma
    import struct
    import tarfile
    import zlib

    import msgspec
    import zstandard
    from isal import isal_zlib

    httpx = _httpx()
    if isinstance(exc, tarfile.TarError):
        return ImageError(f"{prefix}not a valid tar archive: {_line(exc)}")
    if isinstance(exc, EOFError):
        return ImageError(f"{prefix}the data ends early{': ' + _line(exc) if str(exc) else ''}")
    if isinstance(exc, zlib.error | isal_zlib.error | zstandard.ZstdError | lzma.LZMAError):
        return ImageError(f"{prefix}corrupt compressed data: {_line(exc)}")
    if type(exc).__name__ == "BadGzipFile":  # gzip's, an OSError: before the OSErrors below
        return ImageError(f"{prefix}corrupt compressed data: {_line(exc)}")
    if isinstance(exc, msgspec.DecodeError | json.JSONDecodeError):
        return ManifestError(f"{prefix}malformed JSON: {_line(exc)}")
    if isinstance(exc, UnicodeError):
        return ManifestError(f"{prefix}text that is not valid UTF-8")
    if isinstance(exc, OverflowError | struct.error):
        return ManifestError(f"{prefix}a size or number out of range: {_line(exc)}")
    if httpx is not None and isinstance(exc, httpx.DecodingError):
        return RegistryError(
            f"{prefix}the answer does not decode as its Content-Encoding says; refused"
        )
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        reason = exc.strerror or _line(exc) or type(exc).__name__
        path = f"{exc.filename}: " if exc.filename else ""
        if name in _SPACE:
            return DestinationError(f"{prefix}cannot write {path}{reason}")
        return ImageError(f"{prefix}{path}{reason}")
    return None


_TLS_HINT = "for a registry with its own CA use --ca-file, or --no-tls-verify"


def _network(exc: BaseException, prefix: str) -> OccystrapError | None:
    """A failed request. The reason never quotes a URL or a header (they may carry secrets:
    pre-signed queries, upload `_state`, tokens)."""
    import http.client

    httpx = _httpx()
    known: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException, ValueError)
    if httpx is not None:
        known += (httpx.TransportError,)
    if not isinstance(exc, known):
        return None
    tls = _tls_failure(exc)
    if tls is not None:
        import ssl

        reason = (
            f"TLS certificate verification failed ({tls.verify_message}); {_TLS_HINT}"
            if isinstance(tls, ssl.SSLCertVerificationError)
            else f"TLS certificate verification failed; {_TLS_HINT}"
        )
        return RegistryError(prefix + reason, reason=reason)
    if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version number" in str(exc):
        # A TLS hello answered in plain HTTP: retrying cannot help, a flag can.
        reason = (
            "the registry does not speak TLS (a plain-HTTP registry?); for a local "
            "registry use --insecure or ?insecure=true"
        )
        return RegistryError(prefix + reason, reason=reason)
    if isinstance(exc, ValueError) or (
        httpx is not None and isinstance(exc, httpx.LocalProtocolError)
    ):
        # h11 and http.client quote the offending header value, which may be a token.
        reason = "the request is not valid HTTP (a header value or the URL; not shown)"
        return RegistryError(prefix + reason, reason=reason)
    if isinstance(exc, http.client.IncompleteRead):
        reason = f"connection closed after {len(exc.partial)} bytes of the body"
    elif isinstance(exc, TimeoutError) or (
        httpx is not None and isinstance(exc, httpx.TimeoutException)
    ):
        reason = "timed out"
    else:
        text = str(exc).strip()
        name = type(exc).__name__
        reason = f"{name}: {text}" if text else name
    return TransientError(prefix + reason, reason=reason)


def _httpx() -> Any:
    """httpx if it is loaded, else None: an httpx exception cannot exist without it, and a
    run that sends through http.client alone never pays for importing it."""
    return sys.modules.get("httpx")


def _tls_failure(exc: BaseException) -> BaseException | None:
    """The certificate verification failure behind `exc` (itself, its cause, or a library
    that only says so in its text), or None."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc
    cause = exc.__cause__ or exc.__context__
    if cause is not None and isinstance(cause, ssl.SSLCertVerificationError):
        return cause
    return exc if "CERTIFICATE_VERIFY_FAILED" in str(exc) else None
