"""The order in which the registry writer places a blob (destinations/registry.py
`_push_blob`), against a stand-in client that records what it was asked: a blob this run
already put into another repository is mounted from there; a blob resolve did not HEAD
(`LayerDesc.assumed`) is HEADed in its own repository only if that mount fails, and
uploaded only if the HEAD does not find it."""

from __future__ import annotations

from pathlib import Path

from occystrap.config import Config
from occystrap.destinations.registry import RegistryWriter
from occystrap.messages import ImagePlan
from occystrap.reference import ImageRef

DIGEST = "sha256:" + "d" * 64


class _Client:
    def __init__(self, mounts: bool, holds: bool) -> None:
        self.mounts, self.holds = mounts, holds
        self.calls: list[str] = []

    def mount_blob(self, name: str, digest: str, from_name: str) -> bool:
        self.calls.append(f"mount {name} from {from_name}")
        return self.mounts

    def blob_exists(self, name: str, digest: str) -> int | None:
        self.calls.append(f"head {name}")
        return 1 if self.holds else None

    def upload_blob(self, name: str, digest: str, size: int, path: str, **kw: object) -> None:
        self.calls.append(f"upload {name}")


def _push(tmp_path: Path, client: _Client, check_first: bool) -> list[str]:
    writer = RegistryWriter(ImageRef("dst", "mirror"), Config(), True, str(tmp_path), "tok")
    writer._client = lambda: client  # type: ignore[method-assign]
    writer._placed[DIGEST] = "mirror/a"  # an earlier image of the run put it there
    plan = ImagePlan(
        image_id=1,
        source="registry://src/b:1",
        host="src",
        name="b",
        insecure=True,
        repo_tag=None,
        tag=None,
        manifest=b"{}",
        manifest_media_type="application/vnd.oci.image.manifest.v1+json",
        manifest_digest="sha256:" + "0" * 64,
        config=b"{}",
        config_digest="sha256:" + "1" * 64,
        config_media_type="application/vnd.oci.image.config.v1+json",
        diff_ids=[],
        layer_count=1,
        dest_name="mirror/b",
    )
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    writer._push_blob(plan, DIGEST, 1, str(blob), 0, check_first)
    return client.calls


def test_mounted_from_where_the_run_put_it(tmp_path: Path) -> None:
    calls = _push(tmp_path, _Client(mounts=True, holds=False), check_first=True)
    assert calls == ["mount mirror/b from mirror/a"]


def test_an_assumed_blob_is_headed_when_the_mount_fails(tmp_path: Path) -> None:
    calls = _push(tmp_path, _Client(mounts=False, holds=True), check_first=True)
    assert calls == ["mount mirror/b from mirror/a", "head mirror/b"]  # there: no bytes
    calls = _push(tmp_path, _Client(mounts=False, holds=False), check_first=True)
    assert calls == ["mount mirror/b from mirror/a", "head mirror/b", "upload mirror/b"]


def test_a_headed_blob_is_not_headed_again(tmp_path: Path) -> None:
    calls = _push(tmp_path, _Client(mounts=False, holds=True), check_first=False)
    assert calls == ["mount mirror/b from mirror/a", "upload mirror/b"]
