"""The request path's layers (registry/flow.py) against a mock transport: a 401 answered
with a token, credentials kept on the registry's origin across redirects, retries of
transport failures and retryable statuses with the messages they end in, counters, and
token requests that go through the same transport."""

from __future__ import annotations

import ssl

import pytest

from occystrap.errors import AuthError, NotFoundError, RegistryError, TransientError
from occystrap.registry.client import RegistryClient
from occystrap.registry.counters import COUNTERS
from occystrap.registry.credentials import Credentials
from tests.mocktransport import MockRequest, MockResponse, MockTransport

HOST = "r.test"
ACCEPT = ["application/vnd.oci.image.manifest.v1+json"]
MANIFEST = b'{"schemaVersion": 2}'


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_BACKOFF_SCALE", "0")


def _client(
    handler, retries: int = 3, credentials: Credentials | None = None
) -> tuple[RegistryClient, MockTransport]:
    transport = MockTransport(handler)
    return RegistryClient(
        HOST, transport=transport, retries=retries, credentials=credentials
    ), transport


def test_bearer_challenge_then_token_then_answer() -> None:
    def handler(request: MockRequest) -> MockResponse:
        if request.url.startswith("https://auth.test/"):
            return MockResponse(200, {}, b'{"token": "tok", "expires_in": 300}')
        if request.headers.get("authorization") != "Bearer tok":
            return MockResponse(
                401, {"WWW-Authenticate": 'Bearer realm="https://auth.test/t",service="r"'}
            )
        return MockResponse(200, {"Content-Type": ACCEPT[0]}, MANIFEST)

    client, transport = _client(handler)
    before = dict(COUNTERS.requests)
    assert client.get_manifest("app", "1", ACCEPT).body == MANIFEST
    assert client.get_manifest("app", "2", ACCEPT).body == MANIFEST  # token reused
    assert [r.url.split("?")[0] for r in transport.requests] == [
        f"https://{HOST}/v2/app/manifests/1",
        "https://auth.test/t",
        f"https://{HOST}/v2/app/manifests/1",
        f"https://{HOST}/v2/app/manifests/2",
    ]
    counted = dict(COUNTERS.requests)
    assert counted.get(HOST, 0) - before.get(HOST, 0) == 3
    assert counted.get("auth.test") == before.get("auth.test")  # tokens are not counted


def test_refused_fresh_token_is_final() -> None:
    def handler(request: MockRequest) -> MockResponse:
        if request.url.startswith("https://auth.test/"):
            return MockResponse(200, {}, b'{"token": "tok"}')
        return MockResponse(401, {"WWW-Authenticate": 'Bearer realm="https://auth.test/t"'})

    client, transport = _client(handler)
    with pytest.raises(AuthError, match="401 Unauthorized with fresh credentials"):
        client.get_manifest("app", "1", ACCEPT)
    assert sum(1 for r in transport.requests if r.url.startswith(f"https://{HOST}")) == 3


def test_redirect_keeps_credentials_on_the_registry() -> None:
    def handler(request: MockRequest) -> MockResponse:
        if request.url.startswith("https://storage.test/"):
            return MockResponse(200, {}, b"{}")
        if request.headers.get("authorization") is None:
            return MockResponse(401, {"WWW-Authenticate": 'Basic realm="r"'})
        return MockResponse(307, {"Location": "https://storage.test/b?sig=secret"})

    client, transport = _client(handler, credentials=Credentials("u", "p"))
    digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert client.get_blob("app", digest) == b"{}"
    storage = [r for r in transport.requests if r.url.startswith("https://storage.test/")]
    assert storage and all("authorization" not in r.headers for r in storage)
    api = [r for r in transport.requests if r.url.startswith(f"https://{HOST}")]
    assert api[-1].headers["authorization"].startswith("Basic ")


def test_retryable_status_then_success() -> None:
    answers = [
        MockResponse(503, {"Retry-After": "0"}),
        MockResponse(429),
        MockResponse(200, {}, MANIFEST),
    ]
    client, transport = _client(lambda r: answers.pop(0))
    before = COUNTERS.snapshot()
    assert client.get_manifest("app", "1", ACCEPT).body == MANIFEST
    after = COUNTERS.snapshot()
    assert after["retries"] == before["retries"] + 2  # type: ignore[operator]
    assert after["throttled"] == before["throttled"] + 1  # type: ignore[operator]
    assert len(transport.requests) == 3


def test_retries_spent_on_a_status() -> None:
    client, transport = _client(
        lambda r: MockResponse(503, reason="Service Unavailable"), retries=2
    )
    with pytest.raises(TransientError) as caught:
        client.get_manifest("app", "1", ACCEPT)
    assert str(caught.value) == (
        f"GET https://{HOST}/v2/app/manifests/1: 503 Service Unavailable after 3 attempts"
    )
    assert (caught.value.status, caught.value.host, caught.value.retryable) == (503, HOST, False)


def test_retries_spent_on_connection_failures() -> None:
    def handler(request: MockRequest) -> MockResponse:
        raise ConnectionRefusedError(111, "Connection refused")

    client, transport = _client(handler, retries=1)
    with pytest.raises(
        TransientError,
        match=rf"^cannot reach registry {HOST}: "
        r"ConnectionRefusedError: .* \(HEAD https://r.test"
        r"/v2/app/manifests/1, 2 attempts\)$",
    ):
        client.head_manifest("app", "1", ACCEPT)
    assert len(transport.requests) == 2


def test_tls_failure_is_not_retried() -> None:
    def handler(request: MockRequest) -> MockResponse:
        error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        error.verify_message = "self-signed certificate"
        raise error

    client, transport = _client(handler)
    with pytest.raises(
        RegistryError,
        match=f"cannot reach registry {HOST}: TLS certificate "
        "verification failed \\(self-signed certificate\\); "
        "for a registry with its own CA use --ca-file",
    ):
        client.blob_exists("app", "sha256:" + "a" * 64)
    assert len(transport.requests) == 1


def test_body_that_breaks_is_retried_as_a_whole_request() -> None:
    answers = [MockResponse(200, {}, MANIFEST, cut_after=5), MockResponse(200, {}, MANIFEST)]
    client, transport = _client(lambda r: answers.pop(0))
    assert client.get_manifest("app", "1", ACCEPT).body == MANIFEST
    assert len(transport.requests) == 2


def test_api_requests_get_no_registry_credentials_and_read_their_own_401() -> None:
    client, transport = _client(
        lambda r: MockResponse(401, {}, b'{"error": "no"}'), credentials=Credentials("u", "p")
    )
    assert client.get_api(f"https://{HOST}/api/v1/x", {"Authorization": "Bearer api"}, 100) == (
        401,
        b'{"error": "no"}',
    )
    assert [r.headers.get("authorization") for r in transport.requests] == ["Bearer api"]


def test_not_found_has_its_data() -> None:
    client, _ = _client(lambda r: MockResponse(404))
    with pytest.raises(NotFoundError, match=f"manifest app:1 not found on {HOST}") as caught:
        client.get_manifest("app", "1", ACCEPT)
    assert (caught.value.status, caught.value.host) == (404, HOST)
    assert client.head_manifest("app", "1", ACCEPT) is None
