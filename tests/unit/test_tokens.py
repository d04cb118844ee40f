"""Bearer tokens, pure (registry/tokens.py): the request for one, the verdict on the token
server's answer; and the sans-I/O Authenticator (registry/auth.py), which asks a `fetch`
function for tokens instead of holding a client."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from occystrap.errors import AuthError, RegistryError, TransientError, from_library
from occystrap.registry.auth import Authenticator
from occystrap.registry.credentials import Credentials
from occystrap.registry.tokens import (
    TokenRequest,
    read_token_answer,
    token_failure,
    token_request,
)

REALM = "https://auth.test/token"


def test_anonymous_get_with_repeated_scopes() -> None:
    request = token_request(
        "r.test",
        REALM + "?account=x",
        "reg",
        "repository:a:pull,push repository:b:pull",
        None,
        registry_https=True,
    )
    parts = urllib.parse.urlsplit(request.url)
    assert request.method == "GET" and request.body is None
    assert urllib.parse.parse_qsl(parts.query) == [
        ("account", "x"),
        ("service", "reg"),
        ("scope", "repository:a:pull,push"),
        ("scope", "repository:b:pull"),
    ]
    assert "Authorization" not in request.headers
    assert request.headers["Accept-Encoding"] == "identity"


def test_basic_credentials_on_the_get_never_in_the_repr() -> None:
    request = token_request("r.test", REALM, "", "", Credentials("u", "pw-secret"))
    assert request.url == REALM
    assert request.headers["Authorization"] == "Basic dTpwdy1zZWNyZXQ="
    assert "pw-secret" not in repr(request) and "dTpw" not in repr(request)


def test_identity_token_is_an_oauth2_refresh_grant() -> None:
    request = token_request(
        "r.test",
        REALM,
        "reg",
        "repository:a:pull repository:b:pull",
        Credentials("<token>", None, "refresh-secret"),
    )
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = dict(urllib.parse.parse_qsl((request.body or b"").decode()))
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-secret",
        "client_id": "occystrap",
        "service": "reg",
        "scope": "repository:a:pull repository:b:pull",
    }
    assert "refresh-secret" not in repr(request)


def test_plain_http_realm_of_an_https_registry_is_refused() -> None:
    with pytest.raises(AuthError, match="is plain http; refused"):
        token_request("r.test", "http://auth.test/token", "", "", None, registry_https=True)


REQ = TokenRequest("GET", REALM, {}, None, "r.test", "auth.test")


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (401, b"", AuthError, "token server auth.test answered 401 Mock"),
        (503, b"", TransientError, "token server auth.test for r.test: 503 Mock"),
        (404, b"", RegistryError, "unexpected 404 Mock"),
        (200, b"<html>", RegistryError, "answer is not JSON"),
        (200, b'{"token": ""}', RegistryError, "answer holds no token"),
        (200, b"[1]", RegistryError, "answer holds no token"),
        (200, b'{"token": "bad token"}', AuthError, "not a valid header value"),
        (200, b"x" * (2**20 + 1), RegistryError, "larger than 1 MiB"),
    ],
)
def test_unusable_answers(status: int, body: bytes, kind: type, words: str) -> None:
    with pytest.raises(kind, match=words) as caught:
        read_token_answer(REQ, status, "Mock", {"retry-after": "3"}, body)
    assert "bad token" not in str(caught.value)
    if isinstance(caught.value, TransientError):
        assert caught.value.retryable and caught.value.retry_after == 3.0


def test_good_answers() -> None:
    assert read_token_answer(REQ, 200, "OK", {}, b'{"token": "t1", "expires_in": 300}') == (
        "t1",
        300.0,
    )
    assert read_token_answer(REQ, 200, "OK", {}, b'{"access_token": "t2"}') == ("t2", None)


def test_failures_to_reach_the_token_server() -> None:
    timeout = from_library(TimeoutError("timed out"), network=True)
    assert timeout is not None
    assert str(token_failure(REQ, timeout)) == "token server auth.test for r.test: timed out"
    cause = ConnectionRefusedError(111, "refused")
    failed = from_library(cause, network=True)
    assert failed is not None
    failed.__cause__ = cause  # as the transport raises it
    refused = token_failure(REQ, failed)
    assert str(refused) == "cannot reach token server auth.test for r.test: ConnectionRefusedError"
    assert refused.retryable
    invalid = from_library(ValueError("bad header \r\n"), network=True)
    assert invalid is not None
    made = token_failure(REQ, invalid)
    assert not made.retryable and "not valid HTTP" in str(made) and "\r" not in str(made)


class Fetcher:
    def __init__(self) -> None:
        self.requests: list[TokenRequest] = []

    def __call__(self, request: TokenRequest) -> tuple[str, float | None]:
        self.requests.append(request)
        return f"tok{len(self.requests)}", 300.0


def test_authenticator_bearer_flow() -> None:
    auth, fetch = Authenticator("r.test", None, registry_https=True), Fetcher()
    assert auth.header("repository:a:pull", fetch) is None  # nothing known before a challenge
    auth.on_unauthorized(f'Bearer realm="{REALM}",service="reg"', "repository:a:pull", None, fetch)
    assert len(fetch.requests) == 1 and "scope=repository%3Aa%3Apull" in fetch.requests[0].url
    assert auth.header("repository:a:pull", fetch) == "Bearer tok1"  # cached
    assert auth.header("repository:b:pull", fetch) == "Bearer tok2"  # known realm, new scope
    # The registry refuses tok1: it is dropped and a fresh one fetched.
    auth.on_unauthorized(f'Bearer realm="{REALM}"', "repository:a:pull", "Bearer tok1", fetch)
    assert auth.header("repository:a:pull", fetch) == "Bearer tok3"
    assert len(fetch.requests) == 3


def test_authenticator_basic_and_refusals() -> None:
    fetch = Fetcher()
    auth = Authenticator("r.test", Credentials("u", "p"), registry_https=True)
    auth.on_unauthorized('Basic realm="r"', "", None, fetch)
    assert auth.header("", fetch) == "Basic dTpw"
    with pytest.raises(AuthError, match="credentials refused"):
        auth.on_unauthorized('Basic realm="r"', "", "Basic dTpw", fetch)
    anonymous = Authenticator("r.test", None, registry_https=True)
    with pytest.raises(AuthError, match="requires credentials"):
        anonymous.on_unauthorized('Basic realm="r"', "", None, fetch)
    with pytest.raises(AuthError, match="Bearer challenge without realm"):
        anonymous.on_unauthorized('Bearer service="x"', "", None, fetch)
    with pytest.raises(AuthError, match="no supported challenge"):
        anonymous.on_unauthorized("Negotiate abc==", "", None, fetch)
    assert fetch.requests == []


def test_token_answer_is_json_not_echoed() -> None:
    body = json.dumps({"error": "refresh-secret reflected"}).encode()
    with pytest.raises(RegistryError) as caught:
        read_token_answer(REQ, 200, "OK", {}, body)
    assert "refresh-secret" not in str(caught.value)
