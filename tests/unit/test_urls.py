"""Pure URL and range arithmetic of the distribution API (registry/urls.py), with tables."""

from __future__ import annotations

import pytest

from occystrap.errors import ManifestError, RegistryError, UsageError
from occystrap.registry import urls

D = "sha256:" + "a" * 64
BASE = "https://r.test"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://R.test/v2/", ("https", "r.test", 443)),
        ("http://r.test/v2/", ("http", "r.test", 80)),
        ("https://r.test:5000/x", ("https", "r.test", 5000)),
        ("http://[::1]:8080/", ("http", "::1", 8080)),
    ],
)
def test_origin(url: str, expected: tuple[str, str, int]) -> None:
    assert urls.origin(url) == expected


def test_manifest_and_blob_urls() -> None:
    assert urls.manifest_url(BASE, "org/app", "1.0") == f"{BASE}/v2/org/app/manifests/1.0"
    assert urls.manifest_url(BASE, "app", D) == f"{BASE}/v2/app/manifests/{D}"
    assert urls.blob_url(BASE, "app", D) == f"{BASE}/v2/app/blobs/{D}"


@pytest.mark.parametrize(
    ("call", "kind", "words"),
    [
        (lambda: urls.manifest_url(BASE, "Bad_Name", "1"), UsageError, "invalid repository name"),
        (lambda: urls.manifest_url(BASE, "app", "-x"), UsageError, "invalid manifest reference"),
        (lambda: urls.blob_url(BASE, "app", "sha256:abc"), ManifestError, "invalid blob digest"),
        (lambda: urls.blob_url(BASE, "app", "../../etc"), ManifestError, "invalid blob digest"),
        (lambda: urls.check_name("a//b"), UsageError, "invalid repository name"),
    ],
)
def test_invalid_names_and_digests(call, kind: type, words: str) -> None:
    with pytest.raises(kind, match=words):
        call()


@pytest.mark.parametrize(
    ("name", "push", "mount_from", "expected"),
    [
        (None, False, None, ""),
        ("app", False, None, "repository:app:pull"),
        ("app", True, None, "repository:app:pull,push"),
        ("app", True, "base", "repository:app:pull,push repository:base:pull"),
        ("app", True, "app", "repository:app:pull,push"),
        (urls.CATALOG, False, None, "registry:catalog:*"),
    ],
)
def test_scope(name: str | None, push: bool, mount_from: str | None, expected: str) -> None:
    assert urls.scope(name, push, mount_from) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ""),
        ('</v2/_catalog?last=b&n=2>; rel="next"', f"{BASE}/v2/_catalog?last=b&n=2"),
        ("</v2/x/tags/list?last=3>; rel=next", f"{BASE}/v2/x/tags/list?last=3"),
        ('<https://elsewhere.test/v2/_catalog>; rel="next"', ""),  # other origins not followed
        ('</v2/_catalog?n=2>; rel="prev"', ""),
    ],
)
def test_next_link(header: str | None, expected: str) -> None:
    assert urls.next_link(header, f"{BASE}/v2/_catalog?n=2") == expected


def test_upload_location() -> None:
    origin = urls.origin(BASE)
    start = f"{BASE}/v2/app/blobs/uploads/"
    assert (
        urls.upload_location(start, " /v2/app/blobs/uploads/u1?_state=s#frag", origin, "blob")
        == f"{BASE}/v2/app/blobs/uploads/u1?_state=s"
    )
    assert urls.upload_location(start, "u2", origin, "blob") == f"{start}u2"
    with pytest.raises(RegistryError, match=r"^blob: .*another server \(http://r.test/up\)"):
        urls.upload_location(start, "http://r.test/up?secret=1", origin, "blob")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (f"{BASE}/up/u1", f"{BASE}/up/u1?digest=sha256%3A{'a' * 64}"),
        (f"{BASE}/up/u1?_state=a%2Bb", f"{BASE}/up/u1?_state=a%2Bb&digest=sha256%3A{'a' * 64}"),
    ],
)
def test_with_digest(location: str, expected: str) -> None:
    assert urls.with_digest(location, D) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0-0", None),
        ("0-99", 99),
        ("bytes=0-5", 5),
        ("5-9", None),
        ("0-x", None),
    ],
)
def test_range_end(value: str | None, expected: int | None) -> None:
    assert urls.range_end(value) == expected


@pytest.mark.parametrize(
    ("status", "content_range", "expected"),
    [
        (200, None, 0),
        (200, "bytes 5-9/10", 0),
        (206, "bytes 100-199/200", 100),
        (206, "bytes 100-199/*", 100),
        (206, None, None),
        (206, "bytes=100-", None),
    ],
)
def test_resume_offset(status: int, content_range: str | None, expected: int | None) -> None:
    assert urls.resume_offset(status, content_range) == expected


@pytest.mark.parametrize(
    ("start", "length", "content_range", "expected"),
    [
        (0, "100", None, 100),
        (50, "50", "bytes 50-99/100", 100),
        (50, None, "bytes 50-99/300", 300),
        (0, None, None, None),
        (0, "x", "bytes 0-9/*", None),
        (10, "5", "bytes 10-14/12", 15),
    ],
)
def test_announced_end(
    start: int, length: str | None, content_range: str | None, expected: int | None
) -> None:
    assert urls.announced_end(start, length, content_range) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("application/json", "application/json"),
        (
            "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
            "application/vnd.oci.image.manifest.v1+json",
        ),
    ],
)
def test_media_type(value: str | None, expected: str) -> None:
    assert urls.media_type(value) == expected
