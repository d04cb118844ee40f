"""sources.bulk: which patterns read tag lists. A stand-in client records the calls (the
functional tests in tests/functional/test_bulk.py run the same against the real registry)."""

from __future__ import annotations

from typing import Any

import pytest

from occystrap.errors import NotFoundError
from occystrap.reference import BulkPattern
from occystrap.sources.bulk import RegistryBulkSource, literal_tag


class _Client:
    host = "registry.test"

    def __init__(self, repos: list[str], tags: dict[str, list[str]]) -> None:
        self.repos, self.tags, self.listed = repos, tags, []  # type: ignore[var-annotated]

    def list_repositories(self) -> list[str]:
        return self.repos

    def list_tags(self, repo: str) -> list[str]:
        self.listed.append(repo)
        return self.tags.get(repo, [])


def _source(client: _Client, tag: str, regex: str | None = None) -> RegistryBulkSource:
    pattern = BulkPattern("registry.test", "ns/*", tag, regex)
    return RegistryBulkSource(client, pattern, 4)  # type: ignore[arg-type]


def test_a_literal_tag_reads_no_tag_list() -> None:
    client = _Client(["ns/a", "ns/b", "other/c"], {})
    entries = _source(client, "1.0").entries()
    assert client.listed == []
    assert [(str(e.ref), e.optional) for e in entries] == [
        ("registry.test/ns/a:1.0", True),
        ("registry.test/ns/b:1.0", True),
    ]


@pytest.mark.parametrize("tag, regex", [("1.*", None), ("v[12]", None), ("x", r"1\..*")])
def test_a_tag_pattern_reads_the_tag_lists(tag: str, regex: str | None) -> None:
    client = _Client(["ns/a", "ns/b"], {"ns/a": ["1.0", "v1", "x"], "ns/b": ["2.0"]})
    entries = _source(client, tag, regex).entries()
    assert sorted(client.listed) == ["ns/a", "ns/b"]
    assert entries and not any(e.optional for e in entries)


def test_no_repository_is_no_match_either_way() -> None:
    for tag in ("1.0", "1.*"):
        with pytest.raises(NotFoundError, match="no repository and tag"):
            _source(_Client(["other/c"], {}), tag).entries()


def test_literal_tag() -> None:
    args: dict[str, Any] = {"host": "h", "name_glob": "n/*"}
    assert literal_tag(BulkPattern(**args, tag_glob="1.0"))
    assert not literal_tag(BulkPattern(**args, tag_glob="1.*"))
    assert not literal_tag(BulkPattern(**args, tag_glob="1.0", tag_regex="1.0"))
