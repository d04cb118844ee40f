"""sources/base.py's pure helpers: digest checks on what a source answers, and the platform
search through nested indexes, over a source held in memory (a dict of manifests)."""

from __future__ import annotations

import hashlib
import json

import pytest

from occystrap import mediatypes as mt
from occystrap.errors import DigestError, ManifestError, PlatformError
from occystrap.mediatypes import Platform
from occystrap.sources import (
    Entry,
    ImageSource,
    Resolved,
    check_blob,
    check_depth,
    platform_manifest,
    resolved_from_bytes,
)
from occystrap.sources.base import MAX_INDEX_DEPTH


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Manifests:
    """An ImageSource of manifests in a dict (digest → bytes)."""

    local = False

    def __init__(self) -> None:
        self.docs: dict[str, bytes] = {}

    def add(self, doc: dict[str, object]) -> tuple[str, int, str]:
        body = json.dumps(doc).encode()
        digest = _digest(body)
        self.docs[digest] = body
        return digest, len(body), str(doc["mediaType"])

    def entries(self) -> list[Entry]:
        return []

    def fetch_manifest(self, reference: str) -> Resolved:
        return resolved_from_bytes(self.docs[reference], "", "memory", expect=reference)

    def get_blob(self, digest: str) -> bytes:
        raise AssertionError("not asked for")

    def close(self) -> None:
        pass


def _image(source: Manifests, n: int) -> tuple[str, int, str]:
    return source.add(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "size": n, "digest": "sha256:" + f"{n:x}" * 64},
            "layers": [],
        }
    )


def _index(
    source: Manifests, entries: list[tuple[tuple[str, int, str], str | None]]
) -> tuple[str, int, str]:
    manifests = []
    for (digest, size, media_type), platform in entries:
        d: dict[str, object] = {"mediaType": media_type, "digest": digest, "size": size}
        if platform:
            os_, arch, *variant = platform.split("/")
            d["platform"] = {
                "os": os_,
                "architecture": arch,
                **({"variant": variant[0]} if variant else {}),
            }
        manifests.append(d)
    return source.add({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests})


def test_resolved_from_bytes_checks_the_digest_asked_for() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode()
    got = resolved_from_bytes(body, "application/json", "here", expect=_digest(body))
    assert (got.digest, got.media_type) == (_digest(body), mt.OCI_INDEX)
    with pytest.raises(DigestError, match="here: manifest sha256:0+ hashes to"):
        resolved_from_bytes(body, "", "here", expect="sha256:" + "0" * 64)


def test_check_blob() -> None:
    assert check_blob(b"abc", _digest(b"abc"), "here") == b"abc"
    with pytest.raises(DigestError, match="here: blob"):
        check_blob(b"abd", _digest(b"abc"), "here")


def test_check_depth() -> None:
    check_depth("sha256:x", MAX_INDEX_DEPTH - 1)
    with pytest.raises(ManifestError, match="nested more than"):
        check_depth("sha256:x", MAX_INDEX_DEPTH)


def test_platform_in_a_flat_index() -> None:
    source = Manifests()
    amd64, arm64 = _image(source, 1), _image(source, 2)
    top = source.fetch_manifest(
        _index(source, [(amd64, "linux/amd64"), (arm64, "linux/arm64/v8")])[0]
    )
    src: ImageSource = source
    assert platform_manifest(src, top, Platform("linux", "arm64")).digest == arm64[0]
    with pytest.raises(PlatformError, match=r"available: linux/amd64, linux/arm64/v8"):
        platform_manifest(src, top, Platform("linux", "s390x"))


def test_platform_in_a_nested_index_and_what_is_listed_when_missing() -> None:
    source = Manifests()
    amd64, arm64 = _image(source, 1), _image(source, 2)
    inner = _index(source, [(arm64, "linux/arm64")])
    top = source.fetch_manifest(_index(source, [(amd64, "linux/amd64"), (inner, None)])[0])
    assert platform_manifest(source, top, Platform("linux", "arm64")).digest == arm64[0]
    with pytest.raises(PlatformError, match=r"available: linux/amd64, linux/arm64\)"):
        platform_manifest(source, top, Platform("linux", "ppc64le"))


def test_an_index_listed_as_an_index_must_be_one() -> None:
    source = Manifests()
    image = _image(source, 1)
    liar = (image[0], image[1], mt.OCI_INDEX)  # an image manifest said to be an index
    top = source.fetch_manifest(_index(source, [(liar, None)])[0])
    with pytest.raises(ManifestError, match="is listed as an index"):
        platform_manifest(source, top, Platform("linux", "amd64"))
