"""registry://HOST/NAMESPACE/GLOB[:TAGS] as a source: many images, discovered through the
registry's own catalog (`/v2/_catalog`, then `/v2/<name>/tags/list`, both paginated)."""

from __future__ import annotations

import fnmatch
import re
from concurrent.futures import ThreadPoolExecutor

from occystrap.errors import NotFoundError
from occystrap.reference import GLOB_CHARS, TAG_RE, BulkPattern, ImageRef
from occystrap.referrers import is_referrer_tag
from occystrap.registry.client import RegistryClient
from occystrap.sources.base import Entry
from occystrap.sources.registry import RegistryReferrers, RegistrySource


def tag_matches(pattern: BulkPattern, tag: str) -> bool:
    if pattern.tag_regex is not None:
        return re.fullmatch(pattern.tag_regex, tag) is not None
    return fnmatch.fnmatchcase(tag, pattern.tag_glob)


def literal_tag(pattern: BulkPattern) -> bool:
    """The pattern names one tag (no glob characters, no regex)."""
    return pattern.tag_regex is None and not GLOB_CHARS.intersection(pattern.tag_glob)


def no_match(pattern: BulkPattern) -> NotFoundError:
    """What a pattern that matches no image fails its source with."""
    return NotFoundError(
        f"registry://{pattern.host}/{pattern.name_glob}:{pattern.tag_glob}: no repository "
        f"and tag on {pattern.host} matches"
    )


class RegistryBulkSource:
    local = False

    def __init__(
        self,
        client: RegistryClient,
        pattern: BulkPattern,
        parallel: int,
        discovery: RegistryReferrers | None = None,
    ) -> None:
        """`discovery`: with --referrers, the run's referrer discovery; tags that only carry
        referrers (`sha256-<hex>[.sig|.att|.sbom]`) then travel with their subjects instead
        of being images of their own, and the tag lists read here serve discovery too."""
        self.client = client
        self.pattern = pattern
        self.parallel = parallel
        self.discovery = discovery

    def entries(self) -> list[Entry]:
        """Every matching repository at every matching tag. With one literal tag (no glob,
        no regex) and no referrers to discover, the tag lists are not read: each repository
        is an `optional` entry at that tag, and one without it is skipped when its manifest
        GET answers 404 (a tag list per repository would cost the same request and then
        the GET; a 1,000-image re-run saves 1,000 requests)."""
        p = self.pattern
        repos = sorted(
            r for r in self.client.list_repositories() if fnmatch.fnmatchcase(r, p.name_glob)
        )
        if literal_tag(p) and self.discovery is None and TAG_RE.match(p.tag_glob):
            if not repos:
                raise no_match(p)
            return [
                Entry(ref, p.tag_glob, RegistrySource(self.client, ref, None), optional=True)
                for ref in (ImageRef(p.host, repo, tag=p.tag_glob) for repo in repos)
            ]
        with ThreadPoolExecutor(max(1, self.parallel)) as pool:
            tag_lists = list(pool.map(self.client.list_tags, repos))
        found = []
        for repo, tags in zip(repos, tag_lists, strict=True):
            if self.discovery is not None:
                self.discovery.know_tags(self.client.host, repo, tags)
            for tag in sorted(t for t in tags if TAG_RE.match(t) and tag_matches(p, t)):
                if self.discovery is not None and is_referrer_tag(tag):
                    continue
                ref = ImageRef(p.host, repo, tag=tag)
                found.append(Entry(ref, tag, RegistrySource(self.client, ref, self.discovery)))
        if not found:
            raise no_match(p)
        return found

    def close(self) -> None:
        pass
