"""Empty layers are layers: a 0-byte layer.tar (Bazel's rules_docker, some Windows images)
and the 32-byte gzip stream of an empty tar (BuildKit, containerd) read as layers with no
members wherever a layer is read: decompression, check, filters, expand."""

from __future__ import annotations

import hashlib
import io

import pytest

from occystrap.commands.check import ERROR, check_layer_stream, check_plain_layers
from occystrap.filters import FilterChain
from occystrap.filters.layer import filter_layer
from occystrap.layers import codec as layerio
from occystrap.layers.expand import apply_layer
from occystrap.layers.tarread import ChunkReader, members, open_stream
from occystrap.mediatypes import OCI_LAYER, OCI_LAYER_GZIP, Descriptor
from tools.archivebuilder import (
    EMPTY_FILE_DIGEST,
    EMPTY_GZIP,
    EMPTY_GZIP_DIGEST,
    EMPTY_TAR_DIFF_ID,
)

EMPTY = {
    "file": (b"", OCI_LAYER, "none", EMPTY_FILE_DIGEST, EMPTY_FILE_DIGEST),
    "gzip": (EMPTY_GZIP, OCI_LAYER_GZIP, "gzip", EMPTY_GZIP_DIGEST, EMPTY_TAR_DIFF_ID),
}


def test_the_empty_gzip_layer_is_what_buildkit_writes():
    assert len(EMPTY_GZIP) == 32
    assert "sha256:" + hashlib.sha256(EMPTY_GZIP).hexdigest() == EMPTY_GZIP_DIGEST


@pytest.mark.parametrize("kind", EMPTY)
def test_decompress_and_hash(kind, tmp_path):
    data, _, compression, _, diff_id = EMPTY[kind]
    path = tmp_path / "layer"
    path.write_bytes(data)
    assert layerio.decompress_file(str(path), compression)[0] == diff_id


def test_an_empty_stream_has_no_members():
    with open_stream(ChunkReader(iter([]))) as tar:
        assert list(members(tar)) == []


@pytest.mark.parametrize("kind", EMPTY)
def test_check(kind):
    data, media_type, _, digest, diff_id = EMPTY[kind]
    found = check_layer_stream(
        io.BytesIO(data), Descriptor(media_type, digest, len(data)), diff_id, False
    )
    assert [f for f in found if f.severity == ERROR] == []
    assert "0 entries" in found[-1].message


@pytest.mark.parametrize("kind", EMPTY)
@pytest.mark.parametrize(
    "specs, target",
    [
        ((), "gzip"),
        ((), "zstd"),
        (("exclude:pattern=*.bin",), "gzip"),
        (("normalize-timestamps",), "none"),
        (("search:pattern=*",), "none"),
    ],
)
def test_filters_and_compression(kind, specs, target, tmp_path):
    data, _, compression, _, diff_id = EMPTY[kind]
    path, out = tmp_path / "layer", tmp_path / "out"
    path.write_bytes(data)
    result = filter_layer(
        str(path), -1, 0, compression, FilterChain.parse(list(specs)), str(out), target, None
    )
    assert result.input_diff_id == diff_id
    assert layerio.decompress_file(str(out), target)[0] == result.diff_id


@pytest.mark.parametrize("kind", EMPTY)
def test_expand(kind, tmp_path):
    data, _, compression, _, _ = EMPTY[kind]
    plain = tmp_path / "layer.tar"
    with open(plain, "wb") as f:
        for chunk in layerio.decompressed_chunks(io.BytesIO(data), compression):
            f.write(chunk)
    (tmp_path / "root").mkdir()
    apply_layer(str(tmp_path / "root"), str(plain), "test")
    assert list((tmp_path / "root").iterdir()) == []


def test_fast_check_compares_uncompressed_digests_with_diff_ids():
    layers = [
        Descriptor(OCI_LAYER, EMPTY_FILE_DIGEST, 0),
        Descriptor(OCI_LAYER_GZIP, EMPTY_GZIP_DIGEST, 32),
    ]
    config = {"rootfs": {"type": "layers", "diff_ids": [EMPTY_FILE_DIGEST, EMPTY_TAR_DIFF_ID]}}
    assert check_plain_layers(config, layers) == []
    config["rootfs"]["diff_ids"] = [EMPTY_TAR_DIFF_ID, EMPTY_TAR_DIFF_ID]
    (finding,) = check_plain_layers(config, layers)
    assert finding.severity == ERROR and finding.layer == EMPTY_FILE_DIGEST
