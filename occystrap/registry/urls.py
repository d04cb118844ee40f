"""Pure URL and header arithmetic of the distribution API: no I/O, tested with tables.

Where requests go (`manifest_url`, `blob_url`, `upload_location`, `next_link`,
`with_digest`), which token scope they need (`scope`), and what the range headers of
downloads (`Content-Range`, distribution-spec "Pulling blobs", RFC 9110 §14.4) and uploads
(`Range: 0-N`, distribution-spec "Pushing a blob in chunks") say. URLs in messages go through
`redact`: a query may hold a pre-signed signature or an upload's `_state`.
"""

from __future__ import annotations

import re
import urllib.parse

from occystrap.errors import ManifestError, RegistryError, UsageError
from occystrap.redaction import redact_url as redact
from occystrap.reference import DIGEST_RE, NAME_RE, TAG_RE

__all__ = [
    "CATALOG",
    "CONTENT_RANGE_RE",
    "announced_end",
    "blob_url",
    "check_name",
    "manifest_url",
    "media_type",
    "next_link",
    "origin",
    "range_end",
    "redact",
    "resume_offset",
    "scope",
    "upload_location",
    "with_digest",
]

CATALOG = "\0catalog"  # the scope name of /v2/_catalog requests

CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_RANGE_RE = re.compile(r"^(?:bytes=)?0-(\d+)$")

Origin = tuple[str, str, int]


def origin(url: str) -> Origin:
    """(scheme, lower-case host, port) of `url`, the port defaulted from the scheme."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def check_name(name: str) -> None:
    """UsageError unless `name` is a valid repository name (distribution-spec)."""
    if not NAME_RE.match(name):
        raise UsageError(f"invalid repository name {name!r}")


def manifest_url(base_url: str, name: str, reference: str) -> str:
    """`/v2/<name>/manifests/<reference>`; UsageError for a bad name, tag or digest."""
    check_name(name)
    if not (DIGEST_RE.match(reference) or TAG_RE.match(reference)):
        raise UsageError(f"invalid manifest reference {reference!r}")
    return f"{base_url}/v2/{name}/manifests/{reference}"


def blob_url(base_url: str, name: str, digest: str) -> str:
    """`/v2/<name>/blobs/<digest>`; UsageError for a bad name, ManifestError for a digest
    that is not `sha256:<64 hex>` (it comes from a manifest, and would become a path)."""
    check_name(name)
    if not DIGEST_RE.match(digest):
        raise ManifestError(f"invalid blob digest {digest!r}: expected sha256:<64 hex digits>")
    return f"{base_url}/v2/{name}/blobs/{digest}"


def scope(name: str | None, push: bool = False, mount_from: str | None = None) -> str:
    """The token scope an operation needs; several scopes are space-separated.

    Pushes ask for `pull,push` only when they push, so a read-only credential keeps working
    for copies out of a registry; a mount also needs to read its source. "" for no name
    (a request outside any repository, such as another API on the host).
    """
    if not name:
        return ""
    if name == CATALOG:
        return "registry:catalog:*"
    wanted = f"repository:{name}:pull,push" if push else f"repository:{name}:pull"
    if mount_from and mount_from != name:
        wanted += f" repository:{mount_from}:pull"
    return wanted


def next_link(header: str | None, current: str) -> str:
    """The `rel="next"` target of a Link header, resolved against `current`; "" if none.
    Only links on the same origin are followed."""
    if not header:
        return ""
    for part in header.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            target = part.split(";", 1)[0].strip().strip("<>")
            url = urllib.parse.urljoin(current, target)
            return url if origin(url) == origin(current) else ""
    return ""


def upload_location(request_url: str, location: str, registry: Origin, what: str) -> str:
    """Resolve an upload Location against the request it answered, and refuse one that
    leaves the registry (RegistryError naming `what`).

    The spec lets Location be relative or absolute but says nothing of other hosts; a
    registry that sends blob bodies (and would get our credentials) elsewhere is either
    misconfigured or hostile, so only the registry's own scheme, host and port pass.
    """
    resolved = urllib.parse.urljoin(request_url, location.strip())
    resolved = urllib.parse.urldefrag(resolved)[0]
    if origin(resolved) != registry:
        raise RegistryError(
            f"{what}: the registry sent an upload location on another server "
            f"({redact(resolved)}); refusing to send the blob there",
            host=registry[1],
        )
    return resolved


def with_digest(location: str, digest: str) -> str:
    """Add `digest=` to an upload URL, keeping the registry's own (opaque) query intact."""
    parts = urllib.parse.urlsplit(location)
    extra = urllib.parse.urlencode({"digest": digest})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def range_end(value: str | None) -> int | None:
    """The last byte index from an upload `Range: 0-N`, or None when absent or malformed.

    distribution answers `0-0` both for nothing and for one byte received; reading it as
    nothing costs at most a resent byte, never a corrupt blob (the registry checks offsets).
    """
    match = _RANGE_RE.match((value or "").strip())
    if not match:
        return None
    end = int(match.group(1))
    return None if end == 0 else end


def resume_offset(status: int, content_range: str | None) -> int | None:
    """Where a blob body starts: 0 for a 200, the Content-Range start of a 206, None if
    unusable."""
    if status == 200:
        return 0
    match = CONTENT_RANGE_RE.match((content_range or "").strip())
    return int(match.group(1)) if match else None


def announced_end(start: int, content_length: str | None, content_range: str | None) -> int | None:
    """Where a body starting at `start` says the blob ends: `start` + Content-Length, or the
    total of a 206's Content-Range when larger; None when neither is given or parses."""
    ends = []
    try:
        ends.append(start + int(content_length or ""))
    except ValueError:
        pass
    match = CONTENT_RANGE_RE.match((content_range or "").strip())
    if match and match.group(3) != "*":
        ends.append(int(match.group(3)))
    return max(ends) if ends else None


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type value, without its parameters."""
    return (content_type or "").split(";", 1)[0].strip()
