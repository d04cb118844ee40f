"""The OCI image layout (image-spec `image-layout.md`), pure: its file names, the one
validated way from a digest to a blob's path, and the `index.json` entry of an image.

Readers (`sources/ocilayout.py`, the `tar://` reader) and writers (`destinations/oci.py`,
`destinations/dockerarchive.py`) both use it, so neither imports the other.
"""

from __future__ import annotations

import os

from occystrap.errors import ManifestError
from occystrap.mediatypes import OCI_INDEX
from occystrap.reference import DIGEST_RE

#: the layout's marker file and its only content (image-spec 1.0 and 1.1 both write 1.0.0)
LAYOUT_FILE = "oci-layout"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_FILE = "index.json"
BLOBS = "blobs/sha256"  # the only algorithm occystrap reads or writes

#: annotations of an `index.json` entry: the reference name (a tag, image-spec) and the
#: full image name containerd and Docker ≥25 look an image up by
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"


def blob_rel(digest: str) -> str:
    """`blobs/sha256/<hex>`: the blob's path relative to a layout's root, which is also its
    member name in a `docker save` archive. ManifestError when `digest` is not
    `sha256:<64 hex digits>`: a digest becomes a path only once it is known to be safe."""
    if not DIGEST_RE.match(digest):
        raise ManifestError(f"unsupported or malformed digest {digest!r}")
    return f"{BLOBS}/{digest[len('sha256:') :]}"


def blob_path(root: str, digest: str) -> str:
    """The blob's file in the layout at `root` (see `blob_rel` for the check)."""
    return os.path.join(root, blob_rel(digest))


def index_entry(
    media_type: str,
    digest: str,
    size: int,
    annotations: dict[str, str] | None = None,
    artifact_type: str | None = None,
) -> dict[str, object]:
    """The descriptor `index.json` lists an image by (`size`: the manifest's length in
    bytes); `annotations` and `artifactType` only when given and not empty."""
    entry: dict[str, object] = {"mediaType": media_type, "digest": digest, "size": size}
    if artifact_type:
        entry["artifactType"] = artifact_type
    if annotations:
        entry["annotations"] = annotations
    return entry


def empty_index() -> dict[str, object]:
    """A new `index.json` document with no entries."""
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
