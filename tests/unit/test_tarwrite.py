"""layers/tarwrite.py and destinations/tarplan.py: tar headers that depend only on name and
size, a sequential writer whose archives tarfile reads back, and regions planned before any
byte exists."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from occystrap.destinations.tarplan import TarPlanner
from occystrap.layers.tarwrite import BLOCK, TarStream, header, padding
from occystrap.messages import LayerDesc

D = ["sha256:" + c * 64 for c in "abcdef"]


@pytest.mark.parametrize("name", ["/etc/passwd", "./a", "a/../../b", ".."])
def test_unsafe_member_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unsafe tar member name"):
        header(name, 1)


def test_a_header_depends_only_on_name_and_size() -> None:
    first = header("blobs/sha256/" + "a" * 64, 1234)
    assert first == header("blobs/sha256/" + "a" * 64, 1234)
    assert len(first) % BLOCK == 0
    assert [padding(n) for n in (0, 1, 511, 512, 513)] == [0, 511, 1, 0, 511]


def test_tar_stream_writes_what_tarfile_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members as tarfile reads them; a file member's writeback starts once it is in (the
    archive is fsynced whole before its rename)."""
    advised: list[tuple[int, int, int]] = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, o, n, advice: advised.append((o, n, advice))
    )
    src = tmp_path / "layer"
    src.write_bytes(b"x" * 1000)
    out = tmp_path / "out.tar"
    with open(out, "wb", buffering=0) as f:
        stream = TarStream(f)
        stream.add_bytes("manifest.json", b"[]")
        assert stream.add_file("a/layer.tar", str(src)) == 1000
        stream.close()
    assert advised == [(3 * 512, 1000, os.POSIX_FADV_DONTNEED)]  # header, data, header
    data = out.read_bytes()
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [(m.name, m.size, m.mtime, m.uname) for m in tar] == [
            ("manifest.json", 2, 0, ""),
            ("a/layer.tar", 1000, 0, ""),
        ]
        member = tar.extractfile("a/layer.tar")
        assert member is not None and member.read() == b"x" * 1000


def test_planned_regions_are_where_the_stream_would_put_the_data() -> None:
    planner = TarPlanner("/tmp/out.tar")
    layers = [
        LayerDesc(
            image_id=0,
            index=i,
            digest=D[1 + i],
            size=100 * (i + 1),
            media_type="m",
            compression="gzip",
        )
        for i in range(2)
    ]
    regions = planner.plan_image(D[0], 10, D[3], 20, layers)
    assert [r.name for r in regions] == [f"blobs/sha256/{d[7:]}" for d in (D[0], D[1], D[2], D[3])]
    offset = 0
    for region in regions:  # each region: a header, the data, padding to a block
        offset += len(header(region.name, region.size))
        assert region.offset == offset
        offset += region.size + padding(region.size)
    assert planner.end == offset
    assert [(la.path, la.offset) for la in layers] == [
        ("/tmp/out.tar", r.offset) for r in regions[1:3]
    ]


def test_a_blob_shared_by_two_images_is_planned_once() -> None:
    planner = TarPlanner("/tmp/out.tar")
    shared = LayerDesc(
        image_id=0, index=0, digest=D[1], size=100, media_type="m", compression="gzip"
    )
    first = planner.plan_image(D[0], 10, D[2], 20, [shared])
    end = planner.end
    again = LayerDesc(
        image_id=1, index=0, digest=D[1], size=100, media_type="m", compression="gzip"
    )
    second = planner.plan_image(D[3], 10, D[4], 20, [again])
    assert second[1] == first[1] and again.offset == shared.offset
    assert planner.end > end  # only the new config and manifest were added
