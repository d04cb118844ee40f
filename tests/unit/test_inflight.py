"""A blob uploaded while it downloads (destinations/inflight.py with registry/upload.py's
`growing` path), against the mock transport: the PATCH body sends only bytes already in the
file, the committing PUT waits for the verdict, and a cancelled blob never commits."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from occystrap.destinations.inflight import BlobInFlight, StreamCancelled
from occystrap.reference import digest_of
from occystrap.registry.client import RegistryClient
from tests.mocktransport import BlobRegistry, MockTransport

KiB = 2**10
HOST = "registry.test"


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_BACKOFF_SCALE", "0")


def _writer(path: Path, data: bytes, piece: int, pause: float) -> threading.Thread:
    """Append `data` to `path` a piece at a time, as fetch does."""

    def run() -> None:
        with open(path, "wb") as f:
            for at in range(0, len(data), piece):
                f.write(data[at : at + piece])
                f.flush()
                time.sleep(pause)

    return threading.Thread(target=run)


def test_chunks_follow_the_file_and_the_put_waits_for_the_verdict(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(100 * KiB)
    path = tmp_path / "spool"
    blob = BlobInFlight(str(path), digest_of(data), len(data))
    registry = BlobRegistry()
    transport = MockTransport(registry)
    client = RegistryClient(HOST, transport=transport, retries=0)
    waits: list[int] = []
    real_ready = blob.ready

    def ready(end: int) -> int:
        held = real_ready(end)
        assert held >= end and path.stat().st_size >= held  # only bytes already written
        waits.append(held)
        return held

    blob.ready = ready  # type: ignore[method-assign]
    writer = _writer(path, data, 10 * KiB, 0.01)
    uploader = threading.Thread(
        target=client.upload_blob,
        args=("app", blob.digest, blob.size, str(path)),
        kwargs={"growing": blob},
    )
    uploader.start()
    writer.start()
    writer.join()
    time.sleep(0.1)
    # every byte is in the file, but fetch has not vouched for it: no commit yet
    assert ("app", blob.digest) not in registry.blobs
    assert [r.method for r in transport.requests][-1] == "PATCH"
    blob.verify()
    uploader.join(5)
    assert registry.blobs[("app", blob.digest)] == data
    assert len(waits) > 1  # the body followed the file, piece by piece
    assert [r.method for r in transport.requests] == ["POST", "PATCH", "PUT"]


def test_a_cancelled_blob_never_commits(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(64 * KiB)
    path = tmp_path / "spool"
    path.write_bytes(data[: 20 * KiB])  # the download stalls here
    blob = BlobInFlight(str(path), digest_of(data), len(data))
    registry = BlobRegistry()
    transport = MockTransport(registry)
    client = RegistryClient(HOST, transport=transport, retries=0)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            client.upload_blob("app", blob.digest, blob.size, str(path), growing=blob)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            failure.append(exc)

    uploader = threading.Thread(target=run)
    uploader.start()
    time.sleep(0.1)
    blob.cancel()
    uploader.join(5)
    assert not uploader.is_alive()
    assert isinstance(failure[0], StreamCancelled)
    assert ("app", blob.digest) not in registry.blobs
    methods = [r.method for r in transport.requests]
    assert methods == ["POST", "DELETE"]  # the PATCH abandoned mid-body, the session tidied
    assert "PUT" not in methods


def test_ready_and_verified_wait_for_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    blob = BlobInFlight(str(path), "sha256:" + "0" * 64, 10)
    later = threading.Timer(0.05, lambda: path.write_bytes(b"x" * 10))
    later.start()
    blob.ready(10)  # returns once the file (made late) holds 10 bytes
    assert path.stat().st_size == 10
    threading.Timer(0.05, blob.verify).start()
    blob.verified()
    assert blob.is_verified and not blob.is_cancelled


def test_a_verified_blob_whose_file_went_raises(tmp_path: Path) -> None:
    """Verified means complete: a file that is then short or gone was removed under the
    upload (its image failed while publishing), so waiting for it would never end."""
    blob = BlobInFlight(str(tmp_path / "gone"), "sha256:" + "0" * 64, 10)
    blob.verify()
    with pytest.raises(StreamCancelled):
        blob.ready(10)


def test_complete_says_whether_every_byte_is_in(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    blob = BlobInFlight(str(path), "sha256:" + "0" * 64, 10)
    assert not blob.complete  # not even opened
    path.write_bytes(b"x" * 9)
    assert not blob.complete
    path.write_bytes(b"x" * 10)
    assert blob.complete
