"""quay://NAMESPACE[/GLOB][:TAG][?since=YYYY-MM-DD&token=…]: every matching repository of a
Quay namespace, found with Quay's REST API v1 (`--quay-url`, default https://quay.io, so a
self-hosted Quay works too):

- `GET /api/v1/repository?namespace=NS&public=true&last_modified=true`, paginated through
  `next_page`; repository names are matched with the glob;
- per repository, in parallel, `GET /api/v1/repository/NS/NAME/tag/?specificTag=TAG&
  onlyActiveTags=true&limit=1`.

`since` drops repositories last modified before the date and tags that started before it.
`token` (else --password) is a Bearer token for the API only; the images are then pulled
through the registry API of the same host, with the usual registry credentials.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from occystrap.errors import AuthError, NotFoundError, RegistryError, UsageError
from occystrap.redaction import redact_url
from occystrap.reference import TAG_RE, ImageRef
from occystrap.registry.client import RegistryClient
from occystrap.registry.paging import PageGuard
from occystrap.sources.base import Entry
from occystrap.sources.registry import RegistryReferrers, RegistrySource

MAX_PAGES = 1000
MAX_ANSWER = 16 * 2**20  # a page of repositories is tens of KiB


def parse_since(text: object) -> float | None:
    if text is None:
        return None
    try:
        day = datetime.date.fromisoformat(str(text))
    except ValueError:
        raise UsageError(f"since={text}: expected YYYY-MM-DD") from None
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()


def registry_host(api_url: str) -> str:
    """HOST[:PORT] of the Quay URL, without any userinfo (a host name is shown in messages
    and statistics)."""
    return urlsplit(api_url).netloc.rpartition("@")[2]


class QuaySource:
    """Expands quay:// through the registry client of the Quay host, so API calls get the
    same TLS options (--ca-file, --no-tls-verify), retries, --rate-limit and counters as
    every other request; only the API's Bearer token is its own."""

    local = False

    def __init__(
        self,
        api_url: str,
        namespace: str,
        glob: str,
        tag: str,
        since: float | None,
        token: str | None,
        client: RegistryClient,
        parallel: int,
        discovery: RegistryReferrers | None = None,
    ) -> None:
        """`discovery`: the run's referrer discovery (--referrers), shared by every image."""
        self.discovery = discovery
        self.api = api_url.rstrip("/") + "/api/v1"
        self.namespace, self.glob, self.tag, self.since = namespace, glob, tag, since
        self.client = client
        self.parallel = parallel
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.api}{path}"
        status, body = self.client.get_api(f"{url}?{urlencode(params)}", self._headers, MAX_ANSWER)
        url = redact_url(url)  # for messages: --quay-url may hold userinfo
        if status in (401, 403):
            raise AuthError(f"Quay API {url}: {status}; check the token")
        if status == 404:
            raise NotFoundError(f"Quay API {url}: not found")
        if status >= 400:
            raise RegistryError(f"Quay API {url}: {status}")
        if len(body) > MAX_ANSWER:
            raise RegistryError(f"Quay API {url}: answer larger than {MAX_ANSWER // 2**20} MiB")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"Quay API {url}: not JSON") from None
        if not isinstance(doc, dict):
            raise RegistryError(f"Quay API {url}: unexpected answer")
        return doc

    def repositories(self) -> list[str]:
        names: list[str] = []
        params: dict[str, Any] = {
            "namespace": self.namespace,
            "public": "true",
            "last_modified": "true",
        }
        guard = PageGuard(
            f"Quay API {redact_url(self.api)}: repositories of {self.namespace}",
            "",
            max_pages=MAX_PAGES,
        )
        while True:
            doc = self._get("/repository", params)
            repos = doc.get("repositories") or []
            if not isinstance(repos, list):
                raise RegistryError(f"Quay API {redact_url(self.api)}: unexpected answer")
            for repo in repos:
                if not isinstance(repo, dict):
                    continue
                name = str(repo.get("name", ""))
                modified = repo.get("last_modified")
                if (
                    self.since is not None
                    and isinstance(modified, (int, float))
                    and modified < self.since
                ):
                    continue
                if fnmatch.fnmatchcase(name, self.glob):
                    names.append(name)
            next_page = doc.get("next_page")
            if not next_page:
                return sorted(set(names))
            guard.next_page(str(next_page), len(repos))
            params["next_page"] = next_page

    def _has_tag(self, name: str) -> bool:
        path = f"/repository/{quote(self.namespace)}/{quote(name)}/tag/"
        doc = self._get(path, {"specificTag": self.tag, "onlyActiveTags": "true", "limit": 1})
        tags = doc.get("tags") or []
        for tag in tags if isinstance(tags, list) else []:
            if not isinstance(tag, dict) or tag.get("name") != self.tag:
                continue
            started = tag.get("start_ts")
            if (
                self.since is not None
                and isinstance(started, (int, float))
                and started < self.since
            ):
                return False
            return True
        return False

    def entries(self) -> list[Entry]:
        if not TAG_RE.match(self.tag):
            raise UsageError(f"quay://{self.namespace}: invalid tag {self.tag!r}")
        names = self.repositories()
        with ThreadPoolExecutor(max(1, self.parallel)) as pool:
            present = list(pool.map(self._has_tag, names))
        found = []
        for name, ok in zip(names, present, strict=True):
            if ok:
                ref = ImageRef(self.client.host, f"{self.namespace}/{name}", tag=self.tag)
                found.append(Entry(ref, self.tag, RegistrySource(self.client, ref, self.discovery)))
        if not found:
            raise NotFoundError(
                f"quay://{self.namespace}/{self.glob}:{self.tag}: no repository matches"
            )
        return found

    def close(self) -> None:
        pass  # the client belongs to the stage's pool
