"""registry://HOST/NAMESPACE/GLOB[:TAGS] as a source: many images, discovered through the
registry's own catalog (`/v2/_catalog`, then `/v2/<name>/tags/list`, both paginated)."""

from __future__ import annotations

import fnmatch
import re
from concurrent.futures import ThreadPoolExecutor

from occystrap.errors import NotFoundError
from occystrap.reference import TAG_RE, BulkPattern, ImageRef
from occystrap.registry.client import RegistryClient
from occystrap.sources import Entry
from occystrap.sources.registry import RegistrySource


def tag_matches(pattern: BulkPattern, tag: str) -> bool:
    if pattern.tag_regex is not None:
        return re.fullmatch(pattern.tag_regex, tag) is not None
    return fnmatch.fnmatchcase(tag, pattern.tag_glob)


class RegistryBulkSource:
    local = False

    def __init__(self, client: RegistryClient, pattern: BulkPattern, parallel: int) -> None:
        self.client = client
        self.pattern = pattern
        self.parallel = parallel

    def entries(self) -> list[Entry]:
        p = self.pattern
        repos = sorted(r for r in self.client.list_repositories()
                       if fnmatch.fnmatchcase(r, p.name_glob))
        with ThreadPoolExecutor(max(1, self.parallel)) as pool:
            tag_lists = list(pool.map(self.client.list_tags, repos))
        found = []
        for repo, tags in zip(repos, tag_lists, strict=True):
            for tag in sorted(t for t in tags if TAG_RE.match(t) and tag_matches(p, t)):
                ref = ImageRef(p.host, repo, tag=tag)
                found.append(Entry(ref, tag, RegistrySource(self.client, ref)))
        if not found:
            raise NotFoundError(f"registry://{p.host}/{p.name_glob}:{p.tag_glob}: no repository "
                                f"and tag on {p.host} matches")
        return found

    def close(self) -> None:
        pass
