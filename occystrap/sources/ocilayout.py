"""oci://PATH[:REF] as a source: an OCI image layout (index.json + blobs/sha256).

Referrers copied into a layout (`--referrers`) are index.json entries without a ref name;
cosign companions carry their tag (`sha256-<hex>.sig`) as ref name. Neither is an image of
its own: `entries` leaves them out and `find_referrers` finds them by their subject.
"""

from __future__ import annotations

import os
from typing import Any

from occystrap.errors import ManifestError, NotFoundError, OccystrapError
from occystrap.oci import IMAGE_NAME, REF_NAME, blob_path
from occystrap.reference import DIGEST_RE
from occystrap.referrers import Found, companion_tags, descriptor_for, is_referrer_tag
from occystrap.sources.base import BlobFile, Entry, Resolved, resolved_from_bytes
from occystrap.sources.local import name_of, read_blob, read_capped, read_json


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
        self._index: list[dict[str, Any]] = [m for m in index["manifests"] if isinstance(m, dict)]
        for m in self._index:
            digest = m.get("digest")
            if not isinstance(digest, str) or not DIGEST_RE.match(digest):
                raise ManifestError(f"oci://{root}/index.json: bad digest {digest!r}")
        self._media_types = {m["digest"]: str(m.get("mediaType", "")) for m in self._index}
        self._referrers: dict[str, tuple[str, dict[str, Any]]] | None = None

    @staticmethod
    def _ref(m: dict[str, Any]) -> str | None:
        return (m.get("annotations") or {}).get(REF_NAME)

    def _referrers_here(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Unnamed entries whose manifest has a `subject`: digest → (subject, the descriptor
        a referrers index lists for it). Read once; an entry whose manifest cannot be read
        is not a referrer (copying it fails on its own, with its own message)."""
        if self._referrers is None:
            self._referrers = {}
            for m in self._index:
                if self._ref(m) is not None:
                    continue
                try:
                    got = self.fetch_manifest(m["digest"])
                except OccystrapError:
                    continue
                if got.parsed.subject is not None:
                    self._referrers[m["digest"]] = (
                        got.parsed.subject.digest,
                        descriptor_for(got.manifest, got.media_type),
                    )
        return self._referrers

    def entries(self) -> list[Entry]:
        found = []
        for m in self._index:
            ref, digest = self._ref(m), m["digest"]
            if self.ref_name is not None:
                if ref != self.ref_name:
                    continue
            elif (ref is None and digest in self._referrers_here()) or (
                ref and is_referrer_tag(ref)
            ):
                continue  # a referrer: copied with its subject (--referrers)
            annotations = m.get("annotations") or {}
            found.append(Entry(name_of(annotations.get(IMAGE_NAME), ref), digest, self))
        if not found:
            refs = sorted({self._ref(m) or "?" for m in self._index})
            what = f"reference {self.ref_name!r}" if self.ref_name else "images"
            raise NotFoundError(
                f"oci://{self.root}: no {what} (it has: {', '.join(refs) or 'nothing'})"
            )
        return found

    def fetch_manifest(self, reference: str) -> Resolved:
        if not DIGEST_RE.match(reference):  # a tag: a cosign companion's ref name
            digest = next((m["digest"] for m in self._index if self._ref(m) == reference), None)
            if digest is None:
                raise NotFoundError(f"oci://{self.root}: no reference {reference!r}")
            reference = digest
        path = blob_path(self.root, reference)
        body = read_capped(path, "manifest")
        return resolved_from_bytes(
            body, self._media_types.get(reference, ""), path, expect=reference
        )

    def get_blob(self, digest: str) -> bytes:
        return read_blob(blob_path(self.root, digest), digest, "blob")

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(blob_path(self.root, digest))

    def blob_file(self, digest: str) -> BlobFile:
        path = blob_path(self.root, digest)
        if not os.path.isfile(path):
            raise NotFoundError(f"blob {digest} missing from oci://{self.root}")
        return BlobFile(path, owned=False)

    def find_referrers(self, digest: str) -> list[Found]:
        """Unnamed entries whose manifest's subject is `digest`, and cosign companions."""
        found = [
            Found(d, digest, artifact_type=entry.get("artifactType"), descriptor=entry)
            for d, (subject, entry) in self._referrers_here().items()
            if subject == digest
        ]
        refs = {self._ref(m) for m in self._index}
        found += [Found(tag, digest, tag=tag) for tag in companion_tags(digest) if tag in refs]
        return found

    def close(self) -> None:
        pass
