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
