"""A registry as a source: manifests and configs over HTTP, layers downloaded by fetch."""

from __future__ import annotations

from occystrap import mediatypes
from occystrap.reference import ImageRef
from occystrap.registry.client import RegistryClient
from occystrap.sources import Entry, Resolved


class RegistrySource:
    local = False

    def __init__(self, client: RegistryClient, ref: ImageRef) -> None:
        self.client = client
        self.ref = ref

    def entries(self) -> list[Entry]:
        return [Entry(self.ref, self.ref.reference)]

    def fetch_manifest(self, reference: str) -> Resolved:
        """A manifest or index, its digest verified when `reference` is one, parsed."""
        resp = self.client.get_manifest(self.ref.name, reference, mediatypes.ACCEPT)
        media_type = mediatypes.effective_media_type(resp.media_type, resp.body)
        return Resolved(resp.body, media_type, resp.digest,
                        mediatypes.parse(resp.body, media_type))

    def get_blob(self, digest: str) -> bytes:
        return self.client.get_blob(self.ref.name, digest)

    def close(self) -> None:
        pass
