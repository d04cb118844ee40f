"""The image builder must be deterministic and realistic, or every test built on it lies."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from tools import imagebuilder as ib

SIZES = (300 << 10, 64 << 10)


def _decompress(path: str) -> bytes:
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _members(path: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(_decompress(path))) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.mark.parametrize("oci,compression", [(False, "gzip"), (True, "gzip"), (True, "zstd")])
def test_same_seed_same_digests(tmp_path: Path, oci: bool, compression: str) -> None:
    a = ib.build_image(tmp_path / "a", 7, SIZES, oci=oci, compression=compression)
    b = ib.build_image(tmp_path / "b", 7, SIZES, oci=oci, compression=compression)
    c = ib.build_image(tmp_path / "c", 8, SIZES, oci=oci, compression=compression)
    assert a.manifest == b.manifest
    assert a.manifest_digest == b.manifest_digest
    assert [x.digest for x in a.blobs] == [x.digest for x in b.blobs]
    assert a.manifest_digest != c.manifest_digest
    assert {x.digest for x in a.layers}.isdisjoint({x.digest for x in c.layers})


def test_index_is_deterministic_and_shares_base(tmp_path: Path) -> None:
    platforms = ib.DEFAULT_PLATFORMS
    a = ib.build_index(tmp_path / "a", 3, platforms, SIZES)
    b = ib.build_index(tmp_path / "b", 3, platforms, SIZES)
    assert a.manifest == b.manifest and a.digest == b.digest
    doc = json.loads(a.manifest)
    assert doc["mediaType"] == ib.OCI_INDEX
    assert [m["platform"] for m in doc["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
    ]
    # Layer 0 is shared across platforms (as in real images); upper layers differ.
    assert len({img.layers[0].digest for img in a.images}) == 1
    assert len({img.layers[1].digest for img in a.images}) == len(platforms)


def test_digests_sizes_and_diff_ids(tmp_path: Path) -> None:
    for compression in ("gzip", "zstd"):
        image = ib.build_image(tmp_path, 1, SIZES, oci=True, compression=compression)
        for blob in image.blobs:
            data = Path(blob.path).read_bytes()
            assert blob.size == len(data)
            assert blob.digest == "sha256:" + hashlib.sha256(data).hexdigest()
        config = json.loads(Path(image.config.path).read_bytes())
        diff_ids = [
            "sha256:" + hashlib.sha256(_decompress(layer.path)).hexdigest()
            for layer in image.layers
        ]
        assert [layer.diff_id for layer in image.layers] == diff_ids
        assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}


def test_manifest_and_config_media_types(tmp_path: Path) -> None:
    docker = ib.build_image(tmp_path, 1, SIZES)
    doc = json.loads(docker.manifest)
    assert docker.manifest_media_type == doc["mediaType"] == ib.DOCKER_MANIFEST
    assert doc["config"]["mediaType"] == ib.DOCKER_CONFIG
    assert {x["mediaType"] for x in doc["layers"]} == {ib.DOCKER_LAYER_GZIP}
    zstd = ib.build_image(tmp_path, 1, SIZES, oci=True, compression="zstd")
    doc = json.loads(zstd.manifest)
    assert doc["mediaType"] == ib.OCI_MANIFEST
    assert doc["config"]["mediaType"] == ib.OCI_CONFIG
    assert {x["mediaType"] for x in doc["layers"]} == {ib.OCI_LAYER_ZSTD}
    with pytest.raises(ValueError):
        ib.build_image(tmp_path, 1, SIZES, oci=False, compression="zstd")
    arm = ib.build_image(tmp_path, 1, SIZES, platform=("linux", "arm", "v7"))
    config = json.loads(Path(arm.config.path).read_bytes())
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm", "v7")
    assert len(config["history"]) == len(arm.layers) + 1  # one empty_layer entry


def test_layers_hold_the_awkward_entries(tmp_path: Path) -> None:
    image = ib.build_image(tmp_path, 5, SIZES)
    base = _members(image.layers[0].path)
    assert base["usr/bin/sh"].issym() and base["usr/bin/sh"].linkname == "busybox"
    assert base["usr/bin/ls"].islnk() and base["usr/bin/ls"].linkname == "usr/bin/busybox"
    assert base["usr/bin"].isdir()
    assert any(len(name) > 100 for name in base)
    assert any(not name.isascii() for name in base)
    upper = _members(image.layers[1].path)
    assert "etc/.wh.motd" in upper and "etc/motd" in base
    assert "var/cache/.wh..wh..opq" in upper and "var/cache/old.txt" in base
    for members in (base, upper):
        for info in members.values():
            assert info.mtime == ib.EPOCH and info.uid == 0 and info.gid == 0
            assert not info.name.startswith(("/", "./")) and ".." not in info.name.split("/")
    plain = ib.build_image(tmp_path, 5, SIZES, special_entries=False)
    for layer in plain.layers:
        assert all(m.isdir() or m.isfile() for m in _members(layer.path).values())
        assert not any(".wh." in name for name in _members(layer.path))


def test_layer_size_and_compressibility(tmp_path: Path) -> None:
    size = 1 << 20
    random_layer = ib.build_image(tmp_path, 1, [size], special_entries=False).layers[0]
    files = [m for m in _members(random_layer.path).values() if m.name.endswith(".bin")]
    assert sum(m.size for m in files) == size
    assert random_layer.size > size  # random content does not compress
    easy = ib.build_image(tmp_path, 1, [size], special_entries=False, compressible=0.8)
    assert easy.layers[0].size < size * 0.4


def test_parse_helpers() -> None:
    assert ib.parse_size("10M") == 10 << 20
    assert ib.parse_size("2G") == 2 << 30
    assert ib.parse_size("512k") == 512 << 10
    assert ib.parse_size("123") == 123
    with pytest.raises(ValueError):
        ib.parse_size("lots")
    assert ib.parse_platform("linux/arm64/v8") == ("linux", "arm64", "v8")
    assert ib.parse_platform("linux/amd64") == ("linux", "amd64", None)
    with pytest.raises(ValueError):
        ib.parse_platform("linux")
