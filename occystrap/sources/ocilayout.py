"""oci://PATH[:REF] as a source: an OCI image layout (index.json + blobs/sha256)."""

from __future__ import annotations

import os

from occystrap.errors import ManifestError, NotFoundError
from occystrap.formats.ocilayout import IMAGE_NAME, REF_NAME
from occystrap.reference import DIGEST_RE
from occystrap.sources import Entry, Resolved, resolved_from_bytes
from occystrap.sources.local import BlobFile, blob_path, name_of, read_blob, read_capped, read_json


class OCILayoutSource:
    local = True

    def __init__(self, root: str, ref_name: str | None) -> None:
        self.root = root
        self.ref_name = ref_name
        if not os.path.isdir(root):
            raise NotFoundError(f"oci://{root}: no such directory")
        index = read_json(os.path.join(root, "index.json"), "OCI index")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise ManifestError(f"oci://{root}/index.json: no 'manifests' list")
        self._index: list[dict] = [m for m in index["manifests"] if isinstance(m, dict)]
        self._media_types = {m.get("digest"): str(m.get("mediaType", "")) for m in self._index}

    def entries(self) -> list[Entry]:
        found = []
        for m in self._index:
            annotations = m.get("annotations") or {}
            ref = annotations.get(REF_NAME)
            digest = m.get("digest")
            if not isinstance(digest, str) or not DIGEST_RE.match(digest):
                raise ManifestError(f"oci://{self.root}/index.json: bad digest {digest!r}")
            if self.ref_name is not None and ref != self.ref_name:
                continue
            found.append(Entry(name_of(annotations.get(IMAGE_NAME), ref), digest))
        if not found:
            refs = sorted({(m.get("annotations") or {}).get(REF_NAME, "?") for m in self._index})
            what = f"reference {self.ref_name!r}" if self.ref_name else "images"
            raise NotFoundError(f"oci://{self.root}: no {what} (it has: "
                                f"{', '.join(refs) or 'nothing'})")
        return found

    def fetch_manifest(self, reference: str) -> Resolved:
        path = blob_path(self.root, reference)
        body = read_capped(path, "manifest")
        return resolved_from_bytes(body, self._media_types.get(reference, ""), path,
                                   expect=reference)

    def get_blob(self, digest: str) -> bytes:
        return read_blob(blob_path(self.root, digest), digest, "blob")

    def blob_file(self, digest: str) -> BlobFile:
        path = blob_path(self.root, digest)
        if not os.path.isfile(path):
            raise NotFoundError(f"blob {digest} missing from oci://{self.root}")
        return BlobFile(path, owned=False)

    def close(self) -> None:
        pass
