"""Registry answers that are not the one asked for (registry/answers.py): the error raised,
with the registry's own code and message from its JSON error body."""

from __future__ import annotations

import pytest

from occystrap.errors import AuthError, DigestError, NotFoundError, RegistryError
from occystrap.registry import answers
from tests.mocktransport import Answer, MockResponse

URL = "https://r.test/v2/app/manifests/1?secret=x"
UNKNOWN = b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest  unknown"}]}'


def _answer(status: int, body: bytes = b"", **headers: str) -> Answer:
    return Answer(MockResponse(status, headers, body), URL)


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        (UNKNOWN, "MANIFEST_UNKNOWN", " (MANIFEST_UNKNOWN manifest unknown)"),
        (b'{"errors": [{"code": "DENIED"}]}', "DENIED", " (DENIED)"),
        (b'{"errors": []}', "", ""),
        (b'{"errors": ["text"]}', "", ""),
        (b'{"errors": [{"code": 5}]}', "", " (5)"),
        (b"<html>bad gateway</html>", "", ""),
        (b"\xff\xfe", "", ""),
        (b'{"errors": [{"code": "X", "message": "' + b"m" * 500 + b'"}]}', "X", None),
    ],
)
def test_error_code_and_detail(body: bytes, code: str, detail: str | None) -> None:
    assert answers.error_code(body) == code
    if detail is None:
        assert len(answers.error_detail(body)) == len(" ()") + 200
    else:
        assert answers.error_detail(body) == detail


def test_check_status_passes_ok_and_raises_by_status() -> None:
    answers.check_status(_answer(206), "GET", URL, "r.test", "nf", ok=(200, 206))
    with pytest.raises(NotFoundError, match="^manifest app:1 not found$") as nf:
        answers.check_status(
            _answer(404, UNKNOWN), "GET", URL, "r.test", "manifest app:1 not found"
        )
    assert (nf.value.status, nf.value.host) == (404, "r.test")
    with pytest.raises(
        AuthError,
        match=r"^authentication to r.test failed: GET "
        r"https://r.test/v2/app/manifests/1: 403 Mock$",
    ):
        answers.check_status(_answer(403), "GET", URL, "r.test", "nf")
    with pytest.raises(RegistryError, match=r"unexpected 500 Mock \(MANIFEST_UNKNOWN") as caught:
        answers.check_status(_answer(500, UNKNOWN), "GET", URL, "r.test", "nf")
    assert caught.value.code == "MANIFEST_UNKNOWN" and "secret" not in str(caught.value)


def test_head_answers_have_no_body_to_read() -> None:
    with pytest.raises(RegistryError, match=r"unexpected 500 Mock$"):
        answers.check_status(_answer(500, UNKNOWN), "HEAD", URL, "r.test", "nf")


def test_refuse() -> None:
    invalid = b'{"errors": [{"code": "DIGEST_INVALID", "message": "bad"}]}'
    with pytest.raises(
        DigestError,
        match=r"^blob x: the registry refused the digest: 400 Mock "
        r"\(DIGEST_INVALID bad\)$",
    ):
        answers.refuse(_answer(400, invalid), "PUT", URL, "r.test", "blob x")
    with pytest.raises(AuthError, match="^authentication to r.test failed: blob x: PATCH"):
        answers.refuse(_answer(401), "PATCH", URL, "r.test", "blob x")
    with pytest.raises(
        RegistryError,
        match=r"^blob x: POST https://r.test/v2/app/manifests/1 "
        r"answered 413 Mock$",
    ):
        answers.refuse(_answer(413), "POST", URL, "r.test", "blob x")


def test_broken_or_encoded_error_bodies_are_skipped() -> None:
    assert answers.error_body(Answer(MockResponse(500, {}, UNKNOWN, cut_after=10), URL)) == b""
    assert answers.error_body(_answer(500, UNKNOWN, **{"Content-Encoding": "gzip"})) == b""
