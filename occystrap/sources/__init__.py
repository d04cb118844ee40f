"""Where images come from: a registry, or a tarball, OCI layout or directory on disk.

Every source answers the same three questions, so resolve treats them alike: which images
it holds (`entries`), the manifest for a reference (`fetch_manifest`, digest-verified, as a
`Resolved`), and a small blob's bytes (`get_blob`, verified). Local sources also say where a
layer's bytes already are on disk (`blob_file`), so fetch copies instead of downloading.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from occystrap import mediatypes
from occystrap.errors import DigestError
from occystrap.mediatypes import ImageIndex, ImageManifest
from occystrap.reference import ImageRef


@dataclass
class Resolved:
    manifest: bytes
    media_type: str
    digest: str
    parsed: ImageManifest | ImageIndex


@dataclass(frozen=True)
class Entry:
    """One image a source offers: how to name it, and what to ask fetch_manifest for (of
    `source` when set: a bulk source hands out one source per repository)."""

    ref: ImageRef
    reference: str
    source: Any = None


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def resolved_from_bytes(body: bytes, media_type_hint: str, where: str,
                        expect: str | None = None) -> Resolved:
    digest = sha256_of(body)
    if expect is not None and digest != expect:
        raise DigestError(f"{where}: manifest {expect} hashes to {digest}")
    media_type = mediatypes.effective_media_type(media_type_hint, body)
    return Resolved(body, media_type, digest, mediatypes.parse(body, media_type))


def check_blob(data: bytes, digest: str, where: str) -> bytes:
    got = sha256_of(data)
    if got != digest:
        raise DigestError(f"{where}: blob {digest} hashes to {got}")
    return data
