"""oci.py, pure: the one validated way from a digest to a blob's path, and index entries."""

from __future__ import annotations

import os

import pytest

from occystrap.errors import ManifestError
from occystrap.oci import (
    BLOBS,
    IMAGE_NAME,
    REF_NAME,
    blob_path,
    blob_rel,
    empty_index,
    index_entry,
)

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"


def test_blob_paths() -> None:
    assert blob_rel(DIGEST) == f"blobs/sha256/{HEX}" == f"{BLOBS}/{HEX}"
    assert blob_path("/srv/layout", DIGEST) == os.path.join("/srv/layout", "blobs", "sha256", HEX)


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../../etc/passwd",
        "sha256:" + "AB" * 32,  # upper case is not the canonical form
        "sha256:" + "ab" * 31,
        "sha512:" + "ab" * 64,  # never read or written
        HEX,
        "",
        f"{DIGEST}/x",
    ],
)
def test_a_digest_becomes_a_path_only_when_well_formed(digest: str) -> None:
    with pytest.raises(ManifestError, match="malformed digest"):
        blob_rel(digest)
    with pytest.raises(ManifestError):
        blob_path("/srv/layout", digest)


def test_index_entry_has_only_what_is_given() -> None:
    assert index_entry("m", DIGEST, 12) == {"mediaType": "m", "digest": DIGEST, "size": 12}
    assert index_entry("m", DIGEST, 12, {}, "") == {"mediaType": "m", "digest": DIGEST, "size": 12}
    entry = index_entry(
        "m",
        DIGEST,
        12,
        {REF_NAME: "1.0", IMAGE_NAME: "docker.io/a/b:1.0"},
        "application/vnd.example",
    )
    # key order as the layouts have always been written (a tarball's index.json is not
    # sorted): descriptor, then artifactType, then annotations
    assert list(entry) == ["mediaType", "digest", "size", "artifactType", "annotations"]
    assert entry["annotations"] == {REF_NAME: "1.0", IMAGE_NAME: "docker.io/a/b:1.0"}


def test_empty_index_is_a_new_document_each_time() -> None:
    first = empty_index()
    assert first == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
    }
    first["manifests"] = ["x"]
    assert empty_index()["manifests"] == []
