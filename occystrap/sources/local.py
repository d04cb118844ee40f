"""What the local sources (oci://, dir://, tar://) share: blobs that are files on disk."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from occystrap.errors import ManifestError, NotFoundError, UsageError
from occystrap.reference import DIGEST_RE, ImageRef, parse_image_ref
from occystrap.sources import check_blob

MAX_METADATA = 4 * 2**20  # manifests, configs, index.json: refused above this


@dataclass(frozen=True)
class BlobFile:
    path: str
    owned: bool  # our own spool copy: may be moved instead of copied
    digest_seen: str | None = None  # the sha256 measured when it was spooled


def read_capped(path: str, what: str, cap: int = MAX_METADATA) -> bytes:
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
        name, _, tag = text.rpartition(":") if ":" in text.rsplit("/", 1)[-1] else (text, "",
                                                                                      "")
        return ImageRef(host="", name=name or text, tag=tag or fallback_tag)
    return ImageRef(host="", name="image", tag=fallback_tag)


def blob_path(root: str, digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise ManifestError(f"unsupported or malformed digest {digest!r}")
    return os.path.join(root, "blobs", "sha256", digest.split(":", 1)[1])


def read_blob(path: str, digest: str, what: str) -> bytes:
    return check_blob(read_capped(path, what, 16 * 2**20), digest, path)
