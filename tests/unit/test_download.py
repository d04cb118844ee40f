"""Blob downloads (registry/download.py) against a mock transport: resuming a broken body with
Range, a server that ignores Range, one that resumes at the wrong byte, a blob longer than
its descriptor, retries spent (tests/mocktransport.py; no registry running)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from occystrap.errors import DigestError, NotFoundError, RegistryError, TransientError
from occystrap.reference import digest_of
from occystrap.registry.client import RegistryClient
from occystrap.registry.counters import COUNTERS
from tests.mocktransport import BlobRegistry, MockRequest, MockResponse, MockTransport

KiB = 2**10
HOST = "registry.test"
DATA = random.Random(7).randbytes(300 * KiB)
DIGEST = digest_of(DATA)


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_BACKOFF_SCALE", "0")


def _client(fault=None, retries: int = 3) -> tuple[RegistryClient, MockTransport]:
    registry = BlobRegistry(blobs={("app", DIGEST): DATA}, blob_fault=fault)
    transport = MockTransport(registry)
    return RegistryClient(HOST, transport=transport, retries=retries), transport


def _cut_first(times: int, at: int):
    """The first `times` GETs break off `at` bytes into what they serve."""
    left = [times]

    def fault(request: MockRequest) -> MockResponse | None:
        if not left[0]:
            return None
        left[0] -= 1
        start = int((request.headers.get("range") or "bytes=0-")[6:-1])
        return MockResponse(
            200 if not start else 206, _range_headers(start), DATA[start:], cut_after=at
        )

    return fault


def _range_headers(start: int) -> dict[str, str]:
    return {"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"} if start else {}


def test_broken_body_resumes_with_range(tmp_path: Path) -> None:
    client, transport = _client(_cut_first(2, 100 * KiB))
    dest = tmp_path / "blob"
    progress: list[int] = []
    before = COUNTERS.snapshot()
    assert client.download_blob("app", DIGEST, len(DATA), str(dest), progress.append) == len(DATA)
    assert dest.read_bytes() == DATA and sum(progress) == len(DATA) and min(progress) > 0
    ranges = [r.headers.get("range") for r in transport.requests]
    assert ranges == [None, f"bytes={100 * KiB}-", f"bytes={200 * KiB}-"]
    after = COUNTERS.snapshot()
    assert after["retries"] == before["retries"] + 2  # type: ignore[operator]
    assert after["bytes_received"] == before["bytes_received"] + len(DATA)  # type: ignore


def test_range_ignored_restarts_from_zero(tmp_path: Path) -> None:
    calls = [0]

    def fault(request: MockRequest) -> MockResponse | None:
        calls[0] += 1
        # A full 200 every time; the first one breaks off.
        return MockResponse(200, {}, DATA, cut_after=50 * KiB if calls[0] == 1 else None)

    client, transport = _client(fault)
    progress: list[int] = []
    dest = tmp_path / "blob"
    client.download_blob("app", DIGEST, len(DATA), str(dest), progress.append)
    assert dest.read_bytes() == DATA
    assert sum(progress) == len(DATA) and -50 * KiB in progress
    assert transport.requests[1].headers.get("range") == f"bytes={50 * KiB}-"


def test_resume_at_the_wrong_byte_is_refused_once_the_budget_is_spent(tmp_path: Path) -> None:
    def fault(request: MockRequest) -> MockResponse | None:
        return MockResponse(206, _range_headers(10), DATA[10:])  # always from byte 10

    client, transport = _client(fault, retries=2)
    dest = tmp_path / "blob"
    with pytest.raises(RegistryError, match="answers Range requests with the wrong part"):
        client.download_blob("app", DIGEST, len(DATA), str(dest))
    assert dest.stat().st_size == 0  # never left looking complete
    assert len(transport.requests) == 3  # one per try the budget allows


def test_blob_longer_than_its_descriptor_is_not_read(tmp_path: Path) -> None:
    client, transport = _client()
    with pytest.raises(DigestError, match="announces 307200 bytes, the manifest says 1000"):
        client.download_blob("app", DIGEST, 1000, str(tmp_path / "blob"))
    assert len(transport.requests) == 1  # the blob's fault: no retry


def test_retries_spent_name_the_request(tmp_path: Path) -> None:
    def fault(request: MockRequest) -> MockResponse | None:
        start = int((request.headers.get("range") or "bytes=0-")[6:-1])
        return MockResponse(
            206 if start else 200, _range_headers(start), DATA[start:], cut_after=10 * KiB
        )

    client, transport = _client(fault, retries=1)
    dest = tmp_path / "blob"
    with pytest.raises(
        TransientError,
        match=f"GET https://{HOST}/v2/app/blobs/{DIGEST}: "
        "ConnectionResetError: .* after 2 attempts",
    ):
        client.download_blob("app", DIGEST, len(DATA), str(dest))
    assert dest.stat().st_size == 0 and len(transport.requests) == 2


def test_into_a_region_of_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blob lands in its region and nowhere else (through a broken connection), and the
    region's writeback starts once it is verified: the archive is fsynced whole later."""
    advised: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, o, n, advice: advised.append((o, n, advice))
    )
    dest = tmp_path / "archive"
    dest.write_bytes(b"\xaa" * (len(DATA) + 2000))
    client, _ = _client(_cut_first(1, 70 * KiB))
    client.download_blob("app", DIGEST, len(DATA), str(dest), offset=1000)
    got = dest.read_bytes()
    assert got[:1000] == b"\xaa" * 1000 and got[-1000:] == b"\xaa" * 1000
    assert got[1000:-1000] == DATA
    assert advised == [(1000, len(DATA), os.POSIX_FADV_DONTNEED)]


def test_writeback_of_a_kept_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob file the destination keeps as it is has its writeback started once it is
    verified; a spool file that is not kept, none."""
    advised: list[tuple[int, int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, o, n, how: advised.append((o, n, how)))
    client, _ = _client(lambda r: MockResponse(200, {}, DATA))
    client.download_blob("app", DIGEST, len(DATA), str(tmp_path / "spool"))
    assert advised == []
    client.download_blob("app", DIGEST, len(DATA), str(tmp_path / "kept"), writeback=True)
    assert advised == [(0, len(DATA), os.POSIX_FADV_DONTNEED)]
    assert (tmp_path / "kept").read_bytes() == DATA


def test_corrupt_and_missing_blobs(tmp_path: Path) -> None:
    client, _ = _client(lambda r: MockResponse(200, {}, b"x" * len(DATA)))
    with pytest.raises(DigestError, match=f"blob {DIGEST} from {HOST}/app: got sha256:"):
        client.download_blob("app", DIGEST, None, str(tmp_path / "a"))
    assert (tmp_path / "a").stat().st_size == 0
    with pytest.raises(NotFoundError, match=f"not found in {HOST}/other") as caught:
        client.download_blob("other", DIGEST, None, str(tmp_path / "b"))
    assert caught.value.status == 404 and caught.value.host == HOST
