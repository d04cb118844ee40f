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

`from_library` maps what libraries raise on bad input or a bad environment (tarfile,
zlib/ISA-L/zstd, msgspec and json, httpx decoding, OS errors) into this tree, in one place,
so every stage fails the one image with one line; only what it does not know stays a bug.
"""

from __future__ import annotations


class OccystrapError(Exception):
    """Base for every error that is the user's or the environment's, not ours."""

    exit_code = 1


class UsageError(OccystrapError):
    exit_code = 2


class ImageError(OccystrapError):
    pass


class NotFoundError(ImageError):
    pass


class ManifestError(ImageError):
    pass


class PlatformError(ImageError):
    pass


class DigestError(ImageError):
    pass


class AuthError(OccystrapError):
    pass


class RegistryError(OccystrapError):
    pass


class TransientError(RegistryError):
    """Raised for failures a retry may cure; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DestinationError(OccystrapError):
    pass


_SPACE = frozenset({"ENOSPC", "EDQUOT", "EROFS"})


def _line(exc: BaseException) -> str:
    """The library's own words, on one line and short (some quote whole inputs)."""
    text = " ".join(str(exc).split())
    return text[:200] + "…" if len(text) > 200 else text


def from_library(exc: BaseException, where: str = "") -> OccystrapError | None:
    """The OccystrapError for `exc` when it is a library's verdict on bad input or a bad
    environment, prefixed with `where` (what was being read: "layer sha256:…"); None when
    it is a bug, to be reported with its traceback. An OccystrapError comes back as is.

    tarfile errors, truncated streams (EOFError) and corrupt compressed data (zlib, ISA-L,
    zstd, gzip, lzma) are the image's fault (ImageError); malformed JSON or text that is not
    UTF-8 a ManifestError; numbers too large for 64 bits (msgpack, struct) a ManifestError;
    an answer httpx cannot decode a RegistryError; a full or read-only disk a
    DestinationError; any other OSError an ImageError naming the file and the reason.
    """
    import errno
    import json
    import lzma
    import struct
    import tarfile
    import zlib

    import httpx
    import msgspec
    import zstandard
    from isal import isal_zlib

    if isinstance(exc, OccystrapError):
        return exc
    prefix = f"{where}: " if where else ""
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
    if isinstance(exc, httpx.DecodingError):
        return RegistryError(f"{prefix}the answer does not decode as its Content-Encoding "
                             "says; refused")
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        reason = exc.strerror or _line(exc) or type(exc).__name__
        path = f"{exc.filename}: " if exc.filename else ""
        if name in _SPACE:
            return DestinationError(f"{prefix}cannot write {path}{reason}")
        return ImageError(f"{prefix}{path}{reason}")
    return None
