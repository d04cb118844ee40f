"""What the local sources (oci://, dir://, tar://) share: blobs that are files on disk."""

from __future__ import annotations

import json

from occystrap.errors import ManifestError, NotFoundError, UsageError
from occystrap.reference import ImageRef, parse_image_ref
from occystrap.sources.base import check_blob

MAX_METADATA = 4 * 2**20  # manifests, configs, index.json: refused above this


def read_capped(path: str, what: str, cap: int = MAX_METADATA) -> bytes:
    """The file's bytes, at most `cap`: NotFoundError, UsageError (unreadable) or
    ManifestError (larger) naming `what` and `path`."""
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > cap:
        raise ManifestError(f"{what} {path} is larger than {cap // 2**20} MiB; refused")
    return data


def read_json(path: str, what: str) -> object:
    try:
        return json.loads(read_capped(path, what))
    except ValueError as exc:
        raise ManifestError(f"{what} {path} is not valid JSON: {exc}") from None


def name_of(text: str | None, fallback_tag: str | None) -> ImageRef:
    """An image name from a RepoTag or annotation ("host/name:tag", "name:tag"), leniently:
    it only names the image in outputs."""
    if text:
        try:
            if "/" in text and ("." in text.split("/")[0] or ":" in text.split("/")[0]):
                return parse_image_ref(text)
        except UsageError:
            pass
        name, _, tag = text.rpartition(":") if ":" in text.rsplit("/", 1)[-1] else (text, "", "")
        return ImageRef(host="", name=name or text, tag=tag or fallback_tag)
    return ImageRef(host="", name="image", tag=fallback_tag)


def read_blob(path: str, digest: str, what: str) -> bytes:
    """A small blob's file (at most 16 MiB), verified against `digest`."""
    return check_blob(read_capped(path, what, 16 * 2**20), digest, path)
