"""The registry transport against the real test registry, plus a scripted server on 127.0.0.1
for the behaviours a well-behaved registry never shows (Bearer tokens, 503s, redirects, lies)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from occystrap.errors import AuthError, DigestError, NotFoundError, TransientError
from occystrap.registry.auth import Credentials
from occystrap.registry.client import RegistryClient
from tests.conftest import TEST_PASSWORD, TEST_USER, sha256_file
from tests.faultproxy import FaultProxy
from tools import imagebuilder as ib
from tools.imagebuilder import Sample
from tools.testregistry import TestRegistry, free_port

ACCEPT = [ib.DOCKER_MANIFEST, ib.DOCKER_MANIFEST_LIST, ib.OCI_MANIFEST, ib.OCI_INDEX]


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_BACKOFF_SCALE", "0.001")
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _image(sample: Sample) -> ib.BuiltImage:
    assert isinstance(sample.built, ib.BuiltImage)
    return sample.built


def _push_blob(registry: TestRegistry, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=registry.url, trust_env=False) as http:
        started = http.post(f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202
        location = httpx.URL(started.headers["location"]).copy_add_param("digest", digest)
        done = http.put(
            location, content=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert done.status_code == 201
    return digest


# -- the real registry --------------------------------------------------------------------------


def test_the_environments_proxy_is_used_and_no_proxy_honoured(
    registry: TestRegistry, sample_images: dict[str, Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY routes requests through httpx to the proxy (a TCP relay on loopback: the
    registry takes the absolute-form request it forwards), NO_PROXY exempts the host. The
    transport reads the variables when it is made."""
    sample = sample_images["docker"]
    with FaultProxy(registry.port) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.host}")
        with RegistryClient(registry.host, insecure=True) as client:
            got = client.get_manifest(sample.name, sample.tag, ACCEPT)
        assert got.body == sample.manifest
        through = proxy.request_bytes
        assert through > 0
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with RegistryClient(registry.host, insecure=True) as client:
            client.get_manifest(sample.name, sample.tag, ACCEPT)
        assert proxy.request_bytes == through


@pytest.mark.parametrize("key", ["docker", "oci", "index", "manifest_list"])
def test_get_manifest_byte_exact(
    registry: TestRegistry, sample_images: dict[str, Sample], key: str
) -> None:
    sample = sample_images[key]
    with RegistryClient(registry.host, insecure=True) as client:
        by_tag = client.get_manifest(sample.name, sample.tag, ACCEPT)
        by_digest = client.get_manifest(sample.name, sample.digest, ACCEPT)
        head = client.head_manifest(sample.name, sample.tag, ACCEPT)
    assert by_tag.body == sample.manifest == by_digest.body
    assert by_tag.digest == sample.digest
    assert by_tag.media_type == sample.media_type
    assert by_tag.size == len(sample.manifest)
    assert head is not None
    assert head.body == b"" and head.digest == sample.digest and head.size == by_tag.size


def test_missing_things(registry: TestRegistry, sample_images: dict[str, Sample]) -> None:
    name = sample_images["docker"].name
    missing = "sha256:" + "0" * 64
    with RegistryClient(registry.host, insecure=True) as client:
        assert client.head_manifest(name, "nope", ACCEPT) is None
        with pytest.raises(NotFoundError, match=f"manifest {name}:nope not found on "):
            client.get_manifest(name, "nope", ACCEPT)
        with pytest.raises(NotFoundError, match=f"blob {missing} not found in "):
            client.get_blob(name, missing)
        with pytest.raises(NotFoundError):
            client.download_blob(name, missing, None, os.devnull)


def test_get_blob_and_download(
    registry: TestRegistry, sample_images: dict[str, Sample], tmp_path: Path
) -> None:
    sample = sample_images["docker"]
    image = _image(sample)
    with RegistryClient(registry.host, insecure=True) as client:
        assert (
            client.get_blob(sample.name, image.config.digest)
            == Path(image.config.path).read_bytes()
        )
        for layer in image.layers:
            progress: list[int] = []
            dest = tmp_path / layer.digest.replace(":", "_")
            n = client.download_blob(
                sample.name, layer.digest, layer.size, str(dest), progress.append
            )
            assert n == layer.size == sum(progress)
            assert sha256_file(dest) == layer.digest


def test_parallel_downloads_share_one_client(
    registry: TestRegistry, sample_images: dict[str, Sample], tmp_path: Path
) -> None:
    blobs = [
        (s.name, b)
        for s in sample_images.values()
        if isinstance(s.built, ib.BuiltImage)
        for b in s.built.blobs
    ]
    errors: list[BaseException] = []
    with RegistryClient(registry.host, insecure=True) as client:

        def work(i: int) -> None:
            try:
                for j, (name, blob) in enumerate(blobs):
                    dest = tmp_path / f"{i}-{j}"
                    client.download_blob(name, blob.digest, blob.size, str(dest))
                    assert sha256_file(dest) == blob.digest
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_wrong_size_is_a_digest_error(
    registry: TestRegistry, sample_images: dict[str, Sample], tmp_path: Path
) -> None:
    sample = sample_images["docker"]
    layer = _image(sample).layers[0]
    dest = tmp_path / "blob"
    with RegistryClient(registry.host, insecure=True) as client:
        with pytest.raises(DigestError, match=f"blob {layer.digest} from "):
            client.download_blob(sample.name, layer.digest, layer.size - 1, str(dest))
    assert dest.stat().st_size == 0


def test_resume_after_cut(registry: TestRegistry, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    digest = _push_blob(registry, "resume/me", data)
    with FaultProxy(registry.port, cut_after=1 << 20, cuts=2) as proxy:
        with RegistryClient(proxy.host, insecure=True) as client:
            progress: list[int] = []
            dest = tmp_path / "blob"
            assert client.download_blob(
                "resume/me", digest, len(data), str(dest), progress.append
            ) == len(data)
        assert proxy.cuts_done == 2
    assert dest.read_bytes() == data
    assert sum(progress) == len(data)


def test_cuts_beyond_the_budget(registry: TestRegistry, tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    digest = _push_blob(registry, "resume/never", data)
    with FaultProxy(registry.port, cut_after=100_000, cuts=100) as proxy:
        with RegistryClient(proxy.host, insecure=True, retries=2) as client:
            with pytest.raises(TransientError, match="after 3 attempts"):
                client.download_blob("resume/never", digest, len(data), str(tmp_path / "b"))


def test_unreachable_registry() -> None:
    host = f"127.0.0.1:{free_port()}"
    with RegistryClient(host, insecure=True, retries=1) as client:
        with pytest.raises(TransientError, match=f"cannot reach registry {host}: .*2 attempts"):
            client.get_manifest("a/b", "latest", ACCEPT)


def test_basic_auth(auth_registry: TestRegistry, tmp_path: Path) -> None:
    data = os.urandom(4096)
    with httpx.Client(
        base_url=auth_registry.url, trust_env=False, auth=(TEST_USER, TEST_PASSWORD)
    ) as http:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = http.post("/v2/basic/app/blobs/uploads/")
        location = httpx.URL(started.headers["location"]).copy_add_param("digest", digest)
        http.put(location, content=data).raise_for_status()
    good = Credentials(TEST_USER, TEST_PASSWORD)
    with RegistryClient(auth_registry.host, insecure=True, credentials=good) as client:
        assert client.get_blob("basic/app", digest) == data
        client.download_blob("basic/app", digest, len(data), str(tmp_path / "b"))
    with RegistryClient(auth_registry.host, insecure=True) as client:
        with pytest.raises(AuthError, match="requires credentials"):
            client.get_blob("basic/app", digest)
    bad = Credentials(TEST_USER, "wrong-password-123")
    with RegistryClient(auth_registry.host, insecure=True, credentials=bad) as client:
        with pytest.raises(AuthError) as info:
            client.get_blob("basic/app", digest)
    assert "wrong-password-123" not in str(info.value)


# -- a scripted server --------------------------------------------------------------------------

Handler = Callable[[BaseHTTPRequestHandler], None]


class Scripted:
    """A tiny HTTP server on 127.0.0.1 whose answers are functions of (method, path)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _dispatch(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.log.append((self.command, self.path, dict(self.headers.items())))
                route = outer.routes.get((self.command, path))
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            do_GET = do_HEAD = do_POST = _dispatch

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


@pytest.fixture
def other() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


def reply(status: int, body: bytes = b"", **headers: str) -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k.replace("_", "-"), v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    return handle


def sequence(*handlers: Handler) -> Handler:
    """Answer with each handler in turn; the last one repeats."""
    queue = list(handlers)

    def handle(h: BaseHTTPRequestHandler) -> None:
        (queue.pop(0) if len(queue) > 1 else queue[0])(h)

    return handle


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": ib.OCI_MANIFEST}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def test_retry_then_success(scripted: Scripted) -> None:
    scripted.routes[("GET", "/v2/x/manifests/1")] = sequence(
        reply(503, Retry_After="0"), reply(429), reply(200, MANIFEST, Content_Type=ib.OCI_MANIFEST)
    )
    with RegistryClient(scripted.host, insecure=True) as client:
        got = client.get_manifest("x", "1", ACCEPT)
    assert got.body == MANIFEST and got.digest == MANIFEST_DIGEST
    assert len(scripted.log) == 3


def test_retries_exhausted_message(scripted: Scripted) -> None:
    scripted.routes[("GET", "/v2/x/manifests/1")] = reply(503)
    with RegistryClient(scripted.host, insecure=True) as client:
        with pytest.raises(TransientError) as info:
            client.get_manifest("x", "1", ACCEPT)
    assert str(info.value) == (
        f"GET http://{scripted.host}/v2/x/manifests/1: 503 Service Unavailable after 4 attempts"
    )
    assert len(scripted.log) == 4


def test_digest_checks(scripted: Scripted) -> None:
    wrong = "sha256:" + "a" * 64
    scripted.routes[("GET", "/v2/x/manifests/lies")] = reply(
        200, MANIFEST, Content_Type=ib.OCI_MANIFEST + "; charset=utf-8", Docker_Content_Digest=wrong
    )
    scripted.routes[("GET", f"/v2/x/manifests/{wrong}")] = reply(
        200, MANIFEST, Content_Type=ib.OCI_MANIFEST
    )
    scripted.routes[("GET", "/v2/x/manifests/ok")] = reply(
        200, MANIFEST, Content_Type=ib.OCI_MANIFEST + "; charset=utf-8"
    )
    with RegistryClient(scripted.host, insecure=True) as client:
        with pytest.raises(DigestError, match="registry says"):
            client.get_manifest("x", "lies", ACCEPT)
        with pytest.raises(DigestError, match=f"got {MANIFEST_DIGEST}"):
            client.get_manifest("x", wrong, ACCEPT)
        assert client.get_manifest("x", "ok", ACCEPT).media_type == ib.OCI_MANIFEST


def test_bearer_flow_and_cache(scripted: Scripted) -> None:
    realm = f"http://{scripted.host}/token"
    challenge = f'Bearer realm="{realm}",service="svc",scope="repository:x:pull"'
    tokens: list[str] = []

    def token(h: BaseHTTPRequestHandler) -> None:
        assert h.headers["Authorization"] == "Basic " + base64.b64encode(b"u:pw").decode()
        tokens.append(h.path)
        reply(200, json.dumps({"token": "tok-1", "expires_in": 300}).encode())(h)

    def manifest(h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != "Bearer tok-1":
            reply(401, WWW_Authenticate=challenge)(h)
        else:
            reply(200, MANIFEST, Content_Type=ib.OCI_MANIFEST)(h)

    scripted.routes[("GET", "/token")] = token
    scripted.routes[("GET", "/v2/x/manifests/1")] = manifest
    with RegistryClient(scripted.host, insecure=True, credentials=Credentials("u", "pw")) as c:
        for _ in range(3):
            assert c.get_manifest("x", "1", ACCEPT).body == MANIFEST
    assert len(tokens) == 1
    assert "service=svc" in tokens[0] and "scope=repository%3Ax%3Apull" in tokens[0]
    assert len(scripted.log) == 5  # one 401, one token, three manifests


def test_identity_token_uses_oauth_post(scripted: Scripted) -> None:
    realm = f"http://{scripted.host}/token"
    forms: list[str] = []

    def token(h: BaseHTTPRequestHandler) -> None:
        forms.append(h.rfile.read(int(h.headers["Content-Length"])).decode())
        reply(200, json.dumps({"access_token": "tok-2"}).encode())(h)

    def manifest(h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != "Bearer tok-2":
            reply(401, WWW_Authenticate=f'Bearer realm="{realm}",service="svc"')(h)
        else:
            reply(200, MANIFEST, Content_Type=ib.OCI_MANIFEST)(h)

    scripted.routes[("POST", "/token")] = token
    scripted.routes[("GET", "/v2/x/manifests/1")] = manifest
    creds = Credentials("u", None, "refresh-secret")
    with RegistryClient(scripted.host, insecure=True, credentials=creds) as c:
        c.get_manifest("x", "1", ACCEPT)
    assert "grant_type=refresh_token" in forms[0]
    assert "refresh_token=refresh-secret" in forms[0]
    assert "client_id=occystrap" in forms[0] and "scope=repository%3Ax%3Apull" in forms[0]


def test_token_refused_hides_secret(scripted: Scripted) -> None:
    realm = f"http://{scripted.host}/token"
    scripted.routes[("GET", "/token")] = reply(401, b"bad password hunter2")
    scripted.routes[("GET", "/v2/x/manifests/1")] = reply(
        401, WWW_Authenticate=f'Bearer realm="{realm}",service="svc"'
    )
    with RegistryClient(scripted.host, insecure=True, credentials=Credentials("u", "hunter2")) as c:
        with pytest.raises(AuthError, match=f"authentication to {scripted.host} failed") as info:
            c.get_manifest("x", "1", ACCEPT)
    assert "hunter2" not in str(info.value)


def test_refetch_token_once_then_fail(scripted: Scripted) -> None:
    realm = f"http://{scripted.host}/token"
    count = [0]

    def token(h: BaseHTTPRequestHandler) -> None:
        count[0] += 1
        reply(200, json.dumps({"token": f"t{count[0]}"}).encode())(h)

    scripted.routes[("GET", "/token")] = token
    scripted.routes[("GET", "/v2/x/manifests/1")] = reply(
        401, WWW_Authenticate=f'Bearer realm="{realm}",service="svc"'
    )
    with RegistryClient(scripted.host, insecure=True) as c:
        with pytest.raises(AuthError, match="401"):
            c.get_manifest("x", "1", ACCEPT)
    assert count[0] == 2


def test_redirect_drops_authorization_across_hosts(
    scripted: Scripted, other: Scripted, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = f"/v2/x/blobs/{digest}"
    scripted.routes[("GET", blob)] = reply(
        307, Location=f"http://{other.host}/storage/abc?X-Signature=presigned-secret"
    )
    other.routes[("GET", "/storage/abc")] = reply(200, data)
    with RegistryClient(scripted.host, insecure=True, credentials=Credentials("u", "pw")) as client:
        # Make the client send Basic credentials to the registry from the start.
        client._auth._scheme = "basic"
        assert client.download_blob("x", digest, len(data), str(tmp_path / "b")) == len(data)
        assert client.get_blob("x", digest) == data
    assert all("Authorization" in headers for _, _, headers in scripted.log)
    assert other.log and all("Authorization" not in headers for _, _, headers in other.log)


def test_api_requests_carry_their_own_credential_only(scripted: Scripted, other: Scripted) -> None:
    """get_api (Quay's REST API on the registry's host): no registry credential, a 401 is
    the caller's, and the caller's own Authorization never follows a redirect elsewhere."""
    scripted.routes[("GET", "/api/v1/repository")] = reply(401, b'{"error": "no"}')
    scripted.routes[("GET", "/api/v1/moved")] = reply(
        302, Location=f"http://{other.host}/api/v1/elsewhere"
    )
    other.routes[("GET", "/api/v1/elsewhere")] = reply(200, b"{}")
    with RegistryClient(
        scripted.host, insecure=True, credentials=Credentials("u", "registry-pw")
    ) as client:
        client._auth._scheme = "basic"  # as after a first registry request
        status, body = client.get_api(
            f"http://{scripted.host}/api/v1/repository?n=1",
            {"Authorization": "Bearer api-token"},
            1000,
        )
        assert (status, body) == (401, b'{"error": "no"}')
        status, _ = client.get_api(
            f"http://{scripted.host}/api/v1/moved", {"Authorization": "Bearer api-token"}, 1000
        )
        assert status == 200
    assert [h.get("Authorization") for _, _, h in scripted.log] == ["Bearer api-token"] * 2
    assert other.log and all("Authorization" not in h for _, _, h in other.log)


def test_restart_when_range_is_ignored(scripted: Scripted, tmp_path: Path) -> None:
    data = os.urandom(400_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def cut(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:100_000])
        h.wfile.flush()
        h.close_connection = True

    scripted.routes[("GET", f"/v2/x/blobs/{digest}")] = sequence(cut, reply(200, data))
    progress: list[int] = []
    with RegistryClient(scripted.host, insecure=True) as client:
        assert client.download_blob(
            "x", digest, len(data), str(tmp_path / "b"), progress.append
        ) == len(data)
    assert (tmp_path / "b").read_bytes() == data
    assert sum(progress) == len(data) and min(progress) < 0
    assert "Range" in scripted.log[-1][2]


def test_corrupt_blob(scripted: Scripted, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    digest = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    scripted.routes[("GET", f"/v2/x/blobs/{digest}")] = reply(200, data)
    dest = tmp_path / "b"
    with RegistryClient(scripted.host, insecure=True) as client:
        with pytest.raises(DigestError, match=f"blob {digest} from {scripted.host}/x: got sha256:"):
            client.download_blob("x", digest, None, str(dest))
        with pytest.raises(DigestError):
            client.get_blob("x", digest)
    assert dest.stat().st_size == 0


def test_every_request_names_its_agent(registry, sample_images, tmp_path):
    """Manifests, blobs and uploads alike carry `User-Agent: occystrap/VERSION`: one seam
    sends everything."""
    from occystrap import __version__
    from tests.httpfaults import HTTPFaults

    with HTTPFaults(registry.port, []) as wire:
        client = RegistryClient(wire.host, insecure=True)
        s = sample_images["docker"]
        body = client.get_manifest(
            s.name, s.tag, ["application/vnd.docker.distribution.manifest.v2+json"]
        ).body
        layer = json.loads(body)["layers"][0]
        client.download_blob(s.name, layer["digest"], layer["size"], str(tmp_path / "b"))
        client.close()
    agents = {headers.get("User-Agent") for _, _, headers in wire.seen}
    assert agents == {f"occystrap/{__version__} (+https://pypi.org/project/occystrap/)"}
