"""The upload state machine (registry/upload.py) against a mock transport: monolithic and
chunked uploads, resuming after a broken chunk from the offset the registry reports, a lost
session, cancelling, and mounts, with no registry running (tests/mocktransport.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from occystrap.errors import DigestError, RegistryError, TransientError
from occystrap.reference import digest_of
from occystrap.registry import upload
from occystrap.registry.client import RegistryClient
from occystrap.registry.counters import COUNTERS
from tests.mocktransport import BlobRegistry, MockRequest, MockResponse, MockTransport

KiB = 2**10
HOST = "registry.test"


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_BACKOFF_SCALE", "0")
    monkeypatch.setattr(upload, "CHUNKED_THRESHOLD", 64 * KiB)
    monkeypatch.setattr(upload, "CHUNK_SIZE", 16 * KiB)


def _blob(tmp_path: Path, size: int, seed: int = 1) -> tuple[str, bytes, str]:
    data = random.Random(seed).randbytes(size)
    path = tmp_path / f"blob-{seed}"
    path.write_bytes(data)
    return str(path), data, digest_of(data)


def _client(handler: BlobRegistry, retries: int = 3) -> tuple[RegistryClient, MockTransport]:
    transport = MockTransport(handler)
    return RegistryClient(HOST, transport=transport, retries=retries), transport


def test_small_blob_goes_up_in_one_put(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 10 * KiB)
    registry = BlobRegistry()
    client, transport = _client(registry)
    progress: list[int] = []
    client.upload_blob("app", digest, len(data), src, on_progress=progress.append)
    assert registry.blobs[("app", digest)] == data
    assert transport.log() == ["POST /v2/app/blobs/uploads/", "PUT /v2/app/blobs/uploads/s1"]
    put = transport.requests[-1]
    assert put.query == {"_state": "xs1", "digest": digest}  # the registry's query kept
    assert sum(progress) == len(data)


def test_region_of_a_larger_file(tmp_path: Path) -> None:
    src, data, _ = _blob(tmp_path, 30 * KiB)
    part = data[5 * KiB : 25 * KiB]
    registry = BlobRegistry()
    client, _ = _client(registry)
    client.upload_blob("app", digest_of(part), len(part), src, offset=5 * KiB)
    assert registry.blobs[("app", digest_of(part))] == part


def test_big_blob_goes_up_in_chunks(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 100 * KiB)
    registry = BlobRegistry()
    client, transport = _client(registry)
    client.upload_blob("app", digest, len(data), src)
    assert registry.blobs[("app", digest)] == data
    methods = [r.method for r in transport.requests]
    assert methods == ["POST"] + ["PATCH"] * 7 + ["PUT"]  # 6 × 16 KiB + 4 KiB, then commit
    ranges = [r.headers["content-range"] for r in transport.requests if r.method == "PATCH"]
    assert ranges[0] == "0-16383" and ranges[-1] == f"{96 * KiB}-{100 * KiB - 1}"
    # Each chunk goes to the Location the previous answer gave.
    assert transport.requests[2].query["_state"] == f"y{16 * KiB}"


def test_broken_chunk_resumes_from_the_registry_offset(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 100 * KiB)
    registry = BlobRegistry(break_patch={3}, keep=5000)  # chunk 3 breaks, 5000 bytes kept
    client, transport = _client(registry)
    progress: list[int] = []
    before = COUNTERS.snapshot()["retries"]
    client.upload_blob("app", digest, len(data), src, on_progress=progress.append)
    assert registry.blobs[("app", digest)] == data
    log = transport.requests
    status = next(i for i, r in enumerate(log) if r.method == "GET")
    assert log[status - 1].method == "PATCH"  # asked right after the broken chunk
    resumed = log[status + 1]
    assert resumed.method == "PATCH"
    assert resumed.headers["content-range"].startswith(f"{32 * KiB + 5000}-")
    assert sum(progress) == len(data)  # what was resent was taken back first
    assert min(progress) < 0
    assert COUNTERS.snapshot()["retries"] == before + 1  # type: ignore[operator]


def test_broken_monolithic_put_continues_in_chunks(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 40 * KiB)
    registry = BlobRegistry()
    calls = {"put": 0}

    def handler(request: MockRequest) -> MockResponse:
        if request.method == "PUT" and not calls["put"]:
            calls["put"] += 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return registry(request)

    client, transport = _client(registry)
    transport.handler = handler
    client.upload_blob("app", digest, len(data), src)
    assert registry.blobs[("app", digest)] == data
    assert [r.method for r in transport.requests] == [
        "POST",
        "PUT",
        "GET",
        "PATCH",
        "PATCH",
        "PATCH",
        "PUT",
    ]


def test_lost_session_is_cancelled_and_restarted(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 100 * KiB)
    registry = BlobRegistry(break_patch={2}, keep=100, lose_sessions=True)
    client, transport = _client(registry)
    client.upload_blob("app", digest, len(data), src)
    assert registry.blobs[("app", digest)] == data
    assert registry.deleted == ["s1"]  # the lost one, tidied; s2 carried the blob
    assert [r.path for r in transport.requests if r.method == "POST"] == [
        "/v2/app/blobs/uploads/"
    ] * 2


def test_retries_spent_cancel_the_session(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 100 * KiB)
    registry = BlobRegistry(break_patch=set(range(1, 100)))
    client, _ = _client(registry, retries=2)
    with pytest.raises(
        TransientError, match=f"blob {digest} to {HOST}/app: PATCH .* after 3 attempts"
    ) as caught:
        client.upload_blob("app", digest, len(data), src)
    assert not caught.value.retryable and caught.value.attempts == 3
    assert registry.deleted == ["s1"] and not registry.sessions


def test_registry_refusing_the_digest_is_a_digest_error(tmp_path: Path) -> None:
    src, data, _ = _blob(tmp_path, 10 * KiB)
    wrong = digest_of(b"other")
    registry = BlobRegistry()
    client, _ = _client(registry)
    with pytest.raises(DigestError, match="refused the digest: 400 .*DIGEST_INVALID") as caught:
        client.upload_blob("app", wrong, len(data), src)
    assert caught.value.code == "DIGEST_INVALID" and caught.value.status == 400
    assert registry.deleted == ["s1"]


def test_lost_answer_to_the_final_put_finds_the_blob_in(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 10 * KiB)
    registry = BlobRegistry()

    def handler(request: MockRequest) -> MockResponse:
        answer = registry(request)
        if request.method == "PUT":
            raise TimeoutError("timed out")  # the blob went in; the answer did not come back
        return answer

    client, transport = _client(registry)
    transport.handler = handler
    client.upload_blob("app", digest, len(data), src)
    assert transport.log()[-1] == f"HEAD /v2/app/blobs/{digest}"


def test_short_file_is_refused_before_sending(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 10 * KiB)
    client, transport = _client(BlobRegistry())
    with pytest.raises(DigestError, match="fewer than the blob's end"):
        client.upload_blob("app", digest, len(data) + 1, src)
    assert transport.requests == []


def test_foreign_upload_location_is_refused(tmp_path: Path) -> None:
    src, data, digest = _blob(tmp_path, 10 * KiB)

    def handler(request: MockRequest) -> MockResponse:
        return MockResponse(202, {"Location": "https://elsewhere.test/upload?secret=1"})

    client, transport = _client(BlobRegistry())
    transport.handler = handler
    with pytest.raises(RegistryError, match="another server .*elsewhere.test/upload\\)") as c:
        client.upload_blob("app", digest, len(data), src)
    assert "secret" not in str(c.value)
    assert all(urlhost(r.url) == HOST for r in transport.requests)


def urlhost(url: str) -> str:
    return url.split("/")[2]


def test_mount_accepted(tmp_path: Path) -> None:
    _, data, digest = _blob(tmp_path, 1 * KiB)
    registry = BlobRegistry(blobs={("base", digest): data})
    client, transport = _client(registry)
    before = COUNTERS.snapshot()["mounts"]
    assert client.mount_blob("app", digest, "base") is True
    assert registry.blobs[("app", digest)] == data
    assert transport.requests[0].query == {"mount": digest, "from": "base"}
    assert COUNTERS.snapshot()["mounts"] == before + 1  # type: ignore[operator]


def test_mount_declined_cancels_the_session_it_opened(tmp_path: Path) -> None:
    _, data, digest = _blob(tmp_path, 1 * KiB)
    registry = BlobRegistry(blobs={("base", digest): data}, refuse_mount=True)
    client, transport = _client(registry)
    assert client.mount_blob("app", digest, "base") is False
    assert transport.log() == ["POST /v2/app/blobs/uploads/", "DELETE /v2/app/blobs/uploads/s1"]
    assert registry.deleted == ["s1"] and ("app", digest) not in registry.blobs
