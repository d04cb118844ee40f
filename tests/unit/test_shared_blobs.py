"""fetch's in-flight dedup (stages/fetch.py SharedBlobs): one download per digest, its
waiters take hard links, a failed owner hands the download on, and a settled blob is kept
as its (path, offset), not as a Future."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from occystrap.messages import LayerDesc
from occystrap.stages.fetch import SharedBlobs

DATA = b"layer bytes" * 100
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _layer(index: int) -> LayerDesc:
    return LayerDesc(
        image_id=index,
        index=0,
        digest=DIGEST,
        size=len(DATA),
        media_type="application/vnd.oci.image.layer.v1.tar+gzip",
        compression="gzip",
    )


def test_one_download_then_links(tmp_path: Path) -> None:
    blobs = SharedBlobs(str(tmp_path))
    first, second = tmp_path / "a", tmp_path / "b"
    got, mine = blobs.take(_layer(1), str(first), in_place=False)
    assert got is None and mine is not None  # the first one downloads
    first.write_bytes(DATA)
    blobs.publish(mine, _layer(1), str(first), in_place=False)
    assert blobs._blobs[DIGEST] == (str(tmp_path / f"blob-{DIGEST[7:]}"), -1)  # not a Future
    got, mine = blobs.take(_layer(2), str(second), in_place=False)
    assert (got, mine) == (len(DATA), None)
    assert second.read_bytes() == DATA and os.path.samefile(first, second)


def test_a_failed_owner_hands_the_download_on(tmp_path: Path) -> None:
    blobs = SharedBlobs(str(tmp_path))
    got, mine = blobs.take(_layer(1), str(tmp_path / "a"), in_place=False)
    SharedBlobs.withdraw(mine, OSError("cut"))
    got, again = blobs.take(_layer(2), str(tmp_path / "b"), in_place=False)
    assert got is None and again is not None and again is not mine
    with pytest.raises(OSError):
        assert mine is not None
        mine.result()
