"""Listings a server paginates cannot loop forever: repeats, empty runs and page counts."""

from __future__ import annotations

import pytest

from occystrap.errors import RegistryError
from occystrap.registry.paging import PageGuard


def test_a_page_linking_back_is_refused() -> None:
    guard = PageGuard("the catalog of h", "/v2/_catalog?n=100")
    guard.next_page("/v2/_catalog?n=100&last=a", 100)
    with pytest.raises(RegistryError, match="the catalog of h: page 3 links back"):
        guard.next_page("/v2/_catalog?n=100", 100)


def test_empty_pages_that_keep_linking_are_refused() -> None:
    guard = PageGuard("tags", "p0", max_empty=3)
    guard.next_page("p1", 0)
    guard.next_page("p2", 0)
    with pytest.raises(RegistryError, match="3 pages in a row with nothing"):
        guard.next_page("p3", 0)


def test_an_empty_page_between_full_ones_is_fine() -> None:
    guard = PageGuard("tags", "p0", max_empty=2)
    for i in range(1, 20):
        guard.next_page(f"p{i}", 0 if i % 2 else 5)
    assert guard.pages == 20


def test_page_count_is_bounded() -> None:
    guard = PageGuard("catalog", "p0", max_pages=5)
    for i in range(1, 5):
        guard.next_page(f"p{i}", 1)
    with pytest.raises(RegistryError, match="more than 5 pages"):
        guard.next_page("p5", 1)
