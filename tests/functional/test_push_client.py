"""Pushing with RegistryClient against the real test registry (plain, Basic auth, TLS), plus a
scripted server for what a well-behaved registry never does (foreign upload Locations, scopes).

Uploads are checked by reading the blob back byte-exact: a 201 alone only says the registry
agreed with the digest we sent, not that the right bytes went up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import ssl
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from occystrap.errors import AuthError, DigestError, RegistryError
from occystrap.registry import upload as client_mod
from occystrap.registry.auth import Credentials
from occystrap.registry.client import RegistryClient
from tests.conftest import TEST_PASSWORD, TEST_USER
from tests.faultproxy import FaultProxy
from tests.functional.test_client import Scripted, reply
from tools import imagebuilder as ib
from tools.testregistry import TestRegistry

KiB = 2**10
MiB = 2**20


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_BACKOFF_SCALE", "0.001")
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunked uploads from 1 MiB on, in 256 KiB chunks, so tests stay small and fast."""
    monkeypatch.setattr(client_mod, "CHUNKED_THRESHOLD", 1 * MiB)
    monkeypatch.setattr(client_mod, "CHUNK_SIZE", 256 * KiB)


def _blob(tmp_path: Path, size: int, seed: int, name: str = "blob") -> tuple[Path, bytes, str]:
    data = random.Random(seed).randbytes(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data, "sha256:" + hashlib.sha256(data).hexdigest()


def _http(reg: TestRegistry, auth: tuple[str, str] | None = None) -> httpx.Client:
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=reg.ca_file) if reg.ca_file else True
    )
    return httpx.Client(base_url=reg.url, auth=auth, verify=verify, trust_env=False, timeout=60)


def _fetch(reg: TestRegistry, name: str, digest: str, auth: tuple[str, str] | None = None) -> bytes:
    with _http(reg, auth) as http:
        got = http.get(f"/v2/{name}/blobs/{digest}")
    assert got.status_code == 200, got.text
    return got.content


def _open_sessions(reg: TestRegistry, name: str) -> list[str]:
    """Upload sessions distribution still keeps open for `name`.

    An open session has a `startedat` file; a cancelled one (DELETE) loses it and its data,
    though distribution leaves an empty `hashstates` tree behind.
    """
    assert reg.dir is not None
    uploads = reg.dir / "data/docker/registry/v2/repositories" / name / "_uploads"
    if not uploads.exists():
        return []
    return sorted(p.name for p in uploads.iterdir() if (p / "startedat").exists())


def _still_open(reg: TestRegistry, urls: list[str]) -> list[str]:
    """Upload sessions among `urls` that the registry still answers for (GET → 204).

    Asked over the protocol with each session's latest state: after a broken request
    distribution refuses a session without deleting its files, so the disk cannot tell.
    """
    latest: dict[str, str] = {}
    for url in urls:
        path = url.split("?", 1)[0]
        if "/blobs/uploads/" in path and not path.endswith("/uploads/"):
            latest[path] = url
    with _http(reg) as http:
        return [p for p, u in latest.items() if http.get(u).status_code == 204]


def _record(
    monkeypatch: pytest.MonkeyPatch, client: RegistryClient, urls: list[str] | None = None
) -> list[str]:
    """Log the method (and URL) of every request the client makes through its request path."""
    methods: list[str] = []
    original = client._request

    def spy(method: str, url: str, **kwargs: Any) -> Any:
        methods.append(method)
        if urls is not None:
            urls.append(url)
        return original(method, url, **kwargs)

    monkeypatch.setattr(client, "_request", spy)
    return methods


# -- the real registry --------------------------------------------------------------------------


def test_blob_exists(registry: TestRegistry, tmp_path: Path) -> None:
    path, data, digest = _blob(tmp_path, 1000, 1)
    with RegistryClient(registry.host, insecure=True) as client:
        assert client.blob_exists("push/exists", digest) is None
        client.upload_blob("push/exists", digest, len(data), str(path))
        assert client.blob_exists("push/exists", digest) == len(data)
        assert client.blob_exists("push/other", digest) is None


def test_monolithic_upload_byte_exact(
    registry: TestRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data, digest = _blob(tmp_path, 300 * KiB + 7, 2)
    progress: list[int] = []
    with RegistryClient(registry.host, insecure=True) as client:
        methods = _record(monkeypatch, client)
        client.upload_blob("push/mono", digest, len(data), str(path), on_progress=progress.append)
    assert methods == ["POST", "PUT"]
    assert sum(progress) == len(data)
    assert _fetch(registry, "push/mono", digest) == data
    assert _open_sessions(registry, "push/mono") == []


def test_upload_region_of_bigger_file(registry: TestRegistry, tmp_path: Path) -> None:
    """A blob inside a tarball goes up without the bytes around it."""
    _, data, digest = _blob(tmp_path, 200 * KiB + 3, 3)
    big = tmp_path / "archive.tar"
    prefix, suffix = random.randbytes(5 * KiB + 11), random.randbytes(9 * KiB)
    big.write_bytes(prefix + data + suffix)
    with RegistryClient(registry.host, insecure=True) as client:
        client.upload_blob("push/region", digest, len(data), str(big), offset=len(prefix))
    assert _fetch(registry, "push/region", digest) == data


@pytest.mark.usefixtures("small_chunks")
def test_chunked_upload(
    registry: TestRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data, digest = _blob(tmp_path, 1 * MiB + 100 * KiB + 5, 4)
    progress: list[int] = []
    with RegistryClient(registry.host, insecure=True) as client:
        methods = _record(monkeypatch, client)
        client.upload_blob(
            "push/chunked", digest, len(data), str(path), on_progress=progress.append
        )
    assert methods == ["POST"] + ["PATCH"] * 5 + ["PUT"]
    assert sum(progress) == len(data)
    assert _fetch(registry, "push/chunked", digest) == data
    assert _open_sessions(registry, "push/chunked") == []


@pytest.mark.usefixtures("small_chunks")
def test_chunked_upload_from_offset(registry: TestRegistry, tmp_path: Path) -> None:
    _, data, digest = _blob(tmp_path, 1 * MiB + 1, 5)
    big = tmp_path / "archive.tar"
    big.write_bytes(b"x" * 4097 + data + b"y" * 512)
    with RegistryClient(registry.host, insecure=True) as client:
        client.upload_blob("push/chunked-offset", digest, len(data), str(big), offset=4097)
    assert _fetch(registry, "push/chunked-offset", digest) == data


def test_wrong_digest_is_digest_error(
    registry: TestRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data, _ = _blob(tmp_path, 4 * KiB, 6)
    claimed = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    urls: list[str] = []
    with RegistryClient(registry.host, insecure=True) as client:
        methods = _record(monkeypatch, client, urls)
        with pytest.raises(DigestError, match=f"blob {claimed} to .*DIGEST_INVALID"):
            client.upload_blob("push/wrong", claimed, len(data), str(path))
    assert methods == ["POST", "PUT", "DELETE"]  # a 400 is final: no retry
    assert _still_open(registry, urls) == []


def test_short_source_refused_before_sending(registry: TestRegistry, tmp_path: Path) -> None:
    path, data, digest = _blob(tmp_path, 100, 7)
    with RegistryClient(registry.host, insecure=True) as client:
        with pytest.raises(DigestError, match="holds 100 bytes"):
            client.upload_blob("push/short", digest, 101, str(path))


def test_mount_between_repositories(registry: TestRegistry, tmp_path: Path) -> None:
    path, data, digest = _blob(tmp_path, 10 * KiB, 8)
    with RegistryClient(registry.host, insecure=True) as client:
        client.upload_blob("push/mount-src", digest, len(data), str(path))
        assert client.blob_exists("push/mount-dst", digest) is None
        assert client.mount_blob("push/mount-dst", digest, "push/mount-src") is True
        assert client.blob_exists("push/mount-dst", digest) == len(data)
    assert _fetch(registry, "push/mount-dst", digest) == data


def test_mount_refused_leaves_no_session(registry: TestRegistry, tmp_path: Path) -> None:
    _, _, digest = _blob(tmp_path, 10 * KiB, 9)
    with RegistryClient(registry.host, insecure=True) as client:
        assert client.mount_blob("push/mount-miss", digest, "push/nowhere") is False
        assert client.blob_exists("push/mount-miss", digest) is None
    assert _open_sessions(registry, "push/mount-miss") == []


def test_put_manifest(registry: TestRegistry, tmp_path: Path) -> None:
    image = ib.build_image(tmp_path / "img", seed=11, layer_sizes=[20 * KiB, 5 * KiB])
    name = "push/manifest"
    with RegistryClient(registry.host, insecure=True) as client:
        for blob in image.blobs:
            client.upload_blob(name, blob.digest, blob.size, blob.path)
        digest = client.put_manifest(name, "v1", image.manifest, image.manifest_media_type)
        assert digest == image.manifest_digest
        assert (
            client.put_manifest(name, digest, image.manifest, image.manifest_media_type) == digest
        )
        with pytest.raises(DigestError, match="hashes to"):
            client.put_manifest(
                name, "sha256:" + "0" * 64, image.manifest, image.manifest_media_type
            )
    with _http(registry) as http:
        got = http.get(f"/v2/{name}/manifests/v1", headers={"Accept": image.manifest_media_type})
    assert got.status_code == 200
    assert got.content == image.manifest
    assert got.headers["docker-content-digest"] == image.manifest_digest


def test_put_manifest_missing_blob_is_clear(registry: TestRegistry, tmp_path: Path) -> None:
    image = ib.build_image(tmp_path / "img", seed=12, layer_sizes=[4 * KiB])
    with RegistryClient(registry.host, insecure=True) as client:
        with pytest.raises(
            RegistryError, match=r"^manifest push/nothing:v1 to .*: PUT .* 400 .*BLOB_UNKNOWN"
        ):
            client.put_manifest("push/nothing", "v1", image.manifest, image.manifest_media_type)


def test_basic_auth_push(auth_registry: TestRegistry, tmp_path: Path) -> None:
    path, data, digest = _blob(tmp_path, 50 * KiB, 13)
    image = ib.build_image(tmp_path / "img", seed=13, layer_sizes=[8 * KiB])
    creds = Credentials(TEST_USER, TEST_PASSWORD)
    with RegistryClient(auth_registry.host, insecure=True, credentials=creds) as client:
        client.upload_blob("push/auth", digest, len(data), str(path))
        for blob in image.blobs:
            client.upload_blob("push/auth", blob.digest, blob.size, blob.path)
        client.put_manifest("push/auth", "v1", image.manifest, image.manifest_media_type)
        assert client.blob_exists("push/auth", digest) == len(data)
    assert _fetch(auth_registry, "push/auth", digest, (TEST_USER, TEST_PASSWORD)) == data
    with RegistryClient(auth_registry.host, insecure=True) as anonymous:
        with pytest.raises(AuthError, match="requires credentials"):
            anonymous.upload_blob("push/auth", digest, len(data), str(path))
        with pytest.raises(AuthError, match="requires credentials"):
            anonymous.put_manifest("push/auth", "v2", image.manifest, image.manifest_media_type)
    wrong = Credentials(TEST_USER, "not-the-password")
    with RegistryClient(auth_registry.host, insecure=True, credentials=wrong) as client:
        with pytest.raises(AuthError) as info:
            client.upload_blob("push/auth", digest, len(data), str(path))
    assert "not-the-password" not in str(info.value)


# -- broken connections -------------------------------------------------------------------------


@pytest.mark.usefixtures("small_chunks")
def test_upload_cut_mid_chunk_recovers(
    registry: TestRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dies in the middle of a PATCH body.

    distribution 2.8 cancels a session whose stored size no longer matches its state after a
    broken PATCH, so the status GET answers 404 and the client must open a new session; with
    registries that keep the session, the same path resumes (see the next test).
    """
    size = 4 * MiB + 3
    path, data, digest = _blob(tmp_path, size, 14)
    urls: list[str] = []
    with FaultProxy(registry.port, cut_request_after=1 * MiB + 50 * KiB, cuts=1) as proxy:
        with RegistryClient(proxy.host, insecure=True, retries=3) as client:
            methods = _record(monkeypatch, client, urls)
            client.upload_blob("push/resume", digest, size, str(path))
        assert proxy.cuts_done == 1
        sent = proxy.request_bytes
    assert _fetch(registry, "push/resume", digest) == data
    assert "GET" in methods  # it asked where the upload stood before going on
    assert methods.count("POST") == 2  # distribution refused the broken session
    assert sent < 2 * size
    assert _still_open(registry, [u.replace(proxy.host, registry.host) for u in urls]) == []


def test_interrupted_monolithic_put_falls_back(registry: TestRegistry, tmp_path: Path) -> None:
    size = 3 * MiB
    path, data, digest = _blob(tmp_path, size, 15)
    with FaultProxy(registry.port, cut_request_after=1 * MiB, cuts=1) as proxy:
        with RegistryClient(proxy.host, insecure=True, retries=2) as client:
            client.upload_blob("push/mono-cut", digest, size, str(path))
        assert proxy.cuts_done == 1
    assert _fetch(registry, "push/mono-cut", digest) == data


def test_upload_gives_up_and_cleans_up(
    registry: TestRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 2 * MiB
    path, _, digest = _blob(tmp_path, size, 16)
    urls: list[str] = []
    with FaultProxy(registry.port, cut_request_after=512 * KiB, cuts=100) as proxy:
        with RegistryClient(proxy.host, insecure=True, retries=1) as client:
            methods = _record(monkeypatch, client, urls)
            with pytest.raises(RegistryError, match=f"blob {digest} to .* after 2 attempts"):
                client.upload_blob("push/give-up", digest, size, str(path))
    assert methods[-1] == "DELETE"
    assert _still_open(registry, [u.replace(proxy.host, registry.host) for u in urls]) == []


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_with_ca_file(tls_registry: TestRegistry, tmp_path: Path) -> None:
    assert tls_registry.url.startswith("https://") and tls_registry.ca_file
    path, data, digest = _blob(tmp_path, 1 * MiB + 17, 17)
    with RegistryClient(tls_registry.host, ca_file=tls_registry.ca_file) as client:
        client.upload_blob("push/tls", digest, len(data), str(path))
        assert client.blob_exists("push/tls", digest) == len(data)
        out = tmp_path / "back"
        client.download_blob("push/tls", digest, len(data), str(out))
    assert out.read_bytes() == data


@pytest.mark.usefixtures("small_chunks")
def test_tls_chunked(tls_registry: TestRegistry, tmp_path: Path) -> None:
    path, data, digest = _blob(tmp_path, 1 * MiB + 300 * KiB, 18)
    with RegistryClient(tls_registry.host, ca_file=tls_registry.ca_file) as client:
        client.upload_blob("push/tls-chunked", digest, len(data), str(path))
    assert _fetch(tls_registry, "push/tls-chunked", digest) == data


def test_tls_default_verification_fails_clearly(tls_registry: TestRegistry, tmp_path: Path) -> None:
    path, data, digest = _blob(tmp_path, 1000, 19)
    with RegistryClient(tls_registry.host, retries=3) as client:
        with pytest.raises(RegistryError, match="certificate verification failed"):
            client.blob_exists("push/tls", digest)
        with pytest.raises(RegistryError, match="certificate verification failed"):
            client.upload_blob("push/tls", digest, len(data), str(path))


def test_tls_verify_off(tls_registry: TestRegistry, tmp_path: Path) -> None:
    path, data, digest = _blob(tmp_path, 2000, 20)
    with RegistryClient(tls_registry.host, tls_verify=False) as client:
        client.upload_blob("push/tls-noverify", digest, len(data), str(path))
        assert client.blob_exists("push/tls-noverify", digest) == len(data)


# -- a scripted registry ------------------------------------------------------------------------


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    handler = server.server.RequestHandlerClass
    for verb in ("PUT", "PATCH", "DELETE"):
        setattr(handler, f"do_{verb}", handler.do_GET)  # type: ignore[attr-defined]
    yield server
    server.close()


def _drain(h: BaseHTTPRequestHandler) -> None:
    length = int(h.headers.get("Content-Length") or 0)
    while length:
        length -= len(h.rfile.read(min(length, 65536)))


def test_foreign_upload_location_refused(scripted: Scripted, tmp_path: Path) -> None:
    path, data, digest = _blob(tmp_path, 100, 21)
    scripted.routes[("POST", "/v2/x/blobs/uploads/")] = reply(
        202, Location="http://127.0.0.2:1/v2/x/blobs/uploads/u?_state=secret-state"
    )
    with RegistryClient(scripted.host, insecure=True) as client:
        with pytest.raises(RegistryError, match="upload location on another server") as info:
            client.upload_blob("x", digest, len(data), str(path))
    assert "secret-state" not in str(info.value)
    assert [m for m, _, _ in scripted.log] == ["POST"]


def test_relative_location_with_query_and_hard_error(scripted: Scripted, tmp_path: Path) -> None:
    """Location is resolved against the registry, `digest=` appended after its own query; a
    400 is final (one attempt) and its JSON error is in the message."""
    path, data, digest = _blob(tmp_path, 100, 22)
    scripted.routes[("POST", "/v2/x/blobs/uploads/")] = reply(
        202, Location="/v2/x/blobs/uploads/u1?_state=abc"
    )

    def put(h: BaseHTTPRequestHandler) -> None:
        _drain(h)
        body = json.dumps({"errors": [{"code": "SIZE_INVALID", "message": "too big " * 100}]})
        reply(400, body.encode(), Content_Type="application/json")(h)

    scripted.routes[("PUT", "/v2/x/blobs/uploads/u1")] = put
    scripted.routes[("DELETE", "/v2/x/blobs/uploads/u1")] = reply(204)
    with RegistryClient(scripted.host, insecure=True, retries=3) as client:
        with pytest.raises(RegistryError) as info:
            client.upload_blob("x", digest, len(data), str(path))
    message = str(info.value)
    assert message.startswith(f"blob {digest} to {scripted.host}/x: PUT ")
    assert "400 Bad Request (SIZE_INVALID too big" in message and len(message) < 400
    assert "abc" not in message
    puts = [p for m, p, _ in scripted.log if m == "PUT"]
    assert puts == [f"/v2/x/blobs/uploads/u1?_state=abc&digest={digest.replace(':', '%3A')}"]
    assert [m for m, _, _ in scripted.log] == ["POST", "PUT", "DELETE"]


def test_bearer_push_and_mount_scopes(scripted: Scripted, tmp_path: Path) -> None:
    realm = f"http://{scripted.host}/token"
    tokens: list[str] = []

    def token(h: BaseHTTPRequestHandler) -> None:
        tokens.append(h.path)
        reply(200, json.dumps({"token": f"tok-{len(tokens)}"}).encode())(h)

    def guarded(answer: Callable[[BaseHTTPRequestHandler], None]) -> Callable[..., None]:
        def handle(h: BaseHTTPRequestHandler) -> None:
            if not (h.headers.get("Authorization") or "").startswith("Bearer tok-"):
                _drain(h)
                reply(401, WWW_Authenticate=f'Bearer realm="{realm}",service="svc"')(h)
            else:
                answer(h)

        return handle

    digest = "sha256:" + "a" * 64
    scripted.routes[("GET", "/token")] = token
    scripted.routes[("HEAD", f"/v2/dst/blobs/{digest}")] = guarded(reply(404))
    scripted.routes[("POST", "/v2/dst/blobs/uploads/")] = guarded(reply(201))
    creds = Credentials("u", "pw")
    with RegistryClient(scripted.host, insecure=True, credentials=creds) as client:
        assert client.blob_exists("dst", digest) is None
        assert client.mount_blob("dst", digest, "src") is True
        assert client.mount_blob("dst", digest, "src") is True  # token cached per scope
    assert len(tokens) == 2
    assert "scope=repository%3Adst%3Apull" in tokens[0] and tokens[0].count("scope=") == 1
    assert tokens[1].count("scope=") == 2
    assert "scope=repository%3Adst%3Apull%2Cpush" in tokens[1]
    assert "scope=repository%3Asrc%3Apull" in tokens[1]
    expected = "Basic " + base64.b64encode(b"u:pw").decode()
    assert all(
        headers.get("Authorization") != expected for m, _, headers in scripted.log if m != "GET"
    )


class ResumableUploads:
    """The upload API of a registry that keeps a session's bytes across broken requests, as
    the spec allows and distribution does not: resume-from-offset is tested against this.

    `drop_answer_to` makes that PATCH (1-based) store its chunk but close the connection
    without answering, as when a response is lost on the way back.
    """

    def __init__(self, server: Scripted, drop_answer_to: int | None = None) -> None:
        self.data = bytearray()
        self.patches = 0
        self.drop_answer_to = drop_answer_to
        self.stored: bytes | None = None
        base = "/v2/x/blobs/uploads/"
        server.routes[("POST", base)] = self._progress(202)
        server.routes[("PATCH", base + "u1")] = self._patch
        server.routes[("GET", base + "u1")] = self._progress(204)
        server.routes[("PUT", base + "u1")] = self._put
        server.routes[("DELETE", base + "u1")] = reply(204)

    def _progress(
        self, status: int, drain: bool = True
    ) -> Callable[[BaseHTTPRequestHandler], None]:
        def handle(h: BaseHTTPRequestHandler) -> None:
            if drain:
                _drain(h)
            reply(
                status,
                Location=f"/v2/x/blobs/uploads/u1?_state={len(self.data)}",
                Range=f"0-{max(len(self.data) - 1, 0)}",
            )(h)

        return handle

    def _patch(self, h: BaseHTTPRequestHandler) -> None:
        start, _ = (int(v) for v in h.headers["Content-Range"].split("-"))
        if start != len(self.data):
            _drain(h)
            reply(416)(h)
            return
        length = int(h.headers["Content-Length"])
        while length:
            piece = h.rfile.read(min(length, 65536))
            if not piece:
                h.close_connection = True  # the client went away: keep what arrived
                return
            self.data += piece
            length -= len(piece)
        self.patches += 1
        if self.patches == self.drop_answer_to:
            h.close_connection = True
            return
        self._progress(202, drain=False)(h)

    def _put(self, h: BaseHTTPRequestHandler) -> None:
        _drain(h)
        digest = h.path.split("digest=", 1)[1].replace("%3A", ":")
        if digest != "sha256:" + hashlib.sha256(self.data).hexdigest():
            body = json.dumps({"errors": [{"code": "DIGEST_INVALID", "message": "no"}]})
            reply(400, body.encode())(h)
            return
        self.stored = bytes(self.data)
        reply(201, Docker_Content_Digest=digest)(h)


@pytest.mark.usefixtures("small_chunks")
def test_resume_after_lost_answer(
    scripted: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 2 * MiB + 5
    path, data, digest = _blob(tmp_path, size, 24)
    uploads = ResumableUploads(scripted, drop_answer_to=3)
    progress: list[int] = []
    with RegistryClient(scripted.host, insecure=True, retries=2) as client:
        methods = _record(monkeypatch, client)
        client.upload_blob("x", digest, size, str(path), on_progress=progress.append)
    assert uploads.stored == data
    assert methods == ["POST"] + ["PATCH"] * 3 + ["GET"] + ["PATCH"] * 6 + ["PUT"]
    assert sum(progress) == size


@pytest.mark.usefixtures("small_chunks")
def test_interrupted_upload_resumes_via_proxy(
    scripted: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dies mid-chunk; the registry kept what arrived, so the client sends
    only the rest: in all, the blob once plus headers, not a second copy of anything."""
    size = 4 * MiB + 3
    path, data, digest = _blob(tmp_path, size, 25)
    uploads = ResumableUploads(scripted)
    port = int(scripted.host.rsplit(":", 1)[1])
    progress: list[int] = []
    with FaultProxy(port, cut_request_after=1 * MiB + 100 * KiB, cuts=1) as proxy:
        with RegistryClient(proxy.host, insecure=True, retries=2) as client:
            methods = _record(monkeypatch, client)
            client.upload_blob("x", digest, size, str(path), on_progress=progress.append)
        assert proxy.cuts_done == 1
        sent = proxy.request_bytes
    assert uploads.stored == data
    assert methods.count("POST") == 1 and methods.count("GET") == 1
    assert sent < size + 16 * KiB
    assert sum(progress) == size
