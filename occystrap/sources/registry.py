"""A registry as a source: manifests and configs over HTTP, layers downloaded by fetch."""

from __future__ import annotations

import threading

from occystrap import mediatypes
from occystrap.errors import NotFoundError
from occystrap.reference import ImageRef
from occystrap.referrers import Found, companion_tags, fallback_tag, listed, unique
from occystrap.registry.client import RegistryClient
from occystrap.sources.base import Entry, Resolved


class RegistryReferrers:
    """Referrer discovery at registries for one run (distribution-spec 1.1): the referrers
    API where a host has it (a host that answers 404 once is not asked again), else the
    referrers tag; plus cosign's companion tags. Each repository's tag list is read once and
    answers both tag lookups for every manifest in it, so a re-run costs at most one API
    request per manifest and one tag list per repository."""

    def __init__(self) -> None:
        self._no_api: set[str] = set()
        self._tags: dict[tuple[str, str], frozenset[str]] = {}
        self._lock = threading.Lock()

    def know_tags(self, host: str, name: str, tags: list[str]) -> None:
        """Tags a bulk source has listed already."""
        with self._lock:
            self._tags[(host, name)] = frozenset(tags)

    def tags(self, client: RegistryClient, name: str) -> frozenset[str]:
        key = (client.host, name)
        with self._lock:
            known = self._tags.get(key)
        if known is None:
            try:
                known = frozenset(client.list_tags(name))
            except NotFoundError:
                known = frozenset()
            with self._lock:
                self._tags[key] = known
        return known

    def find(self, client: RegistryClient, name: str, digest: str) -> list[Found]:
        found: list[Found] = []
        where = f"{client.host}/{name}"
        if client.host not in self._no_api:
            pages = client.get_referrers(name, digest)
            if pages is None:
                with self._lock:
                    self._no_api.add(client.host)
            else:
                found += listed(pages, digest, where)
        tags = self.tags(client, name)
        if client.host in self._no_api and fallback_tag(digest) in tags:
            got = client.get_manifest(name, fallback_tag(digest), mediatypes.ACCEPT)
            found += listed([got.body], digest, f"{where}:{fallback_tag(digest)}")
        found += [Found(tag, digest, tag=tag) for tag in companion_tags(digest) if tag in tags]
        return unique(found)


class RegistrySource:
    local = False

    def __init__(
        self, client: RegistryClient, ref: ImageRef, discovery: RegistryReferrers | None = None
    ) -> None:
        self.client = client
        self.ref = ref
        self.discovery = discovery or RegistryReferrers()

    def entries(self) -> list[Entry]:
        return [Entry(self.ref, self.ref.reference, self)]

    def fetch_manifest(self, reference: str) -> Resolved:
        """A manifest or index, its digest verified when `reference` is one, parsed."""
        resp = self.client.get_manifest(self.ref.name, reference, mediatypes.ACCEPT)
        media_type = mediatypes.effective_media_type(resp.media_type, resp.body)
        return Resolved(resp.body, media_type, resp.digest, mediatypes.parse(resp.body, media_type))

    def get_blob(self, digest: str) -> bytes:
        return self.client.get_blob(self.ref.name, digest)

    def has_blob(self, digest: str) -> bool:
        """Does the repository serve this blob (a foreign layer may not be)?"""
        return self.client.blob_exists(self.ref.name, digest) is not None

    def find_referrers(self, digest: str) -> list[Found]:
        return self.discovery.find(self.client, self.ref.name, digest)

    def close(self) -> None:
        pass
