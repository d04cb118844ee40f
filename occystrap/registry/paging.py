"""A bound on paginated listings: `/v2/_catalog`, `tags/list` (Link `rel="next"`) and the
Quay API's `next_page` tokens.

Pure. A server decides where the next page is, so a hostile or broken one can link a page to
itself, or to ever new URLs, and a client that trusts it loops forever with nothing printed.
`PageGuard` is asked before each page is fetched: it refuses a page it has seen already, more
than `max_pages` pages, and a run of `max_empty` pages in a row that brought nothing (a listing
that keeps saying "there is more" without giving any).
"""

from __future__ import annotations

from occystrap.errors import RegistryError

MAX_PAGES = 10_000  # 1,000,000 names at 100 a page, Docker Hub's page size
MAX_EMPTY = 10


class PageGuard:
    """Call `next_page(key, found)` before fetching each page after the first: `key` names
    the page (its URL, or the opaque token), `found` is how many items the previous page had.
    Raises RegistryError naming `what` (e.g. "catalog of HOST") when the listing is not going
    anywhere."""

    def __init__(
        self, what: str, first: str, max_pages: int = MAX_PAGES, max_empty: int = MAX_EMPTY
    ) -> None:
        self.what = what
        self.max_pages = max_pages
        self.max_empty = max_empty
        self._seen = {first}
        self._empty = 0

    @property
    def pages(self) -> int:
        return len(self._seen)

    def next_page(self, key: str, found: int) -> None:
        self._empty = self._empty + 1 if found == 0 else 0
        if key in self._seen:
            raise RegistryError(
                f"{self.what}: page {self.pages + 1} links back to an earlier "
                "page; the listing loops, refused"
            )
        if self._empty >= self.max_empty:
            raise RegistryError(
                f"{self.what}: {self._empty} pages in a row with nothing on "
                "them that still link to a next page; refused"
            )
        if len(self._seen) >= self.max_pages:
            raise RegistryError(f"{self.what}: more than {self.max_pages} pages; refused")
        self._seen.add(key)
