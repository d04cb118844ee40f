import json

import pytest

from occystrap import mediatypes as mt
from occystrap.errors import ManifestError, PlatformError, UsageError

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def manifest(media_type=mt.DOCKER_MANIFEST, layer_type=mt.DOCKER_LAYER_GZIP, **extra):
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": {"mediaType": mt.DOCKER_CONFIG, "digest": D1, "size": 10},
           "layers": [{"mediaType": layer_type, "digest": D2, "size": 20}]}
    doc.update(extra)
    return json.dumps(doc).encode()


def index(*platforms):
    return mt.ImageIndex(mt.OCI_INDEX, [
        mt.Descriptor(mt.OCI_MANIFEST, f"sha256:{i:064x}", 1, platform=mt.parse_platform(p))
        for i, p in enumerate(platforms)])


@pytest.mark.parametrize("media_type, expected", [
    (mt.DOCKER_LAYER_GZIP, "gzip"), (mt.OCI_LAYER_GZIP, "gzip"), (mt.OCI_LAYER_ZSTD, "zstd"),
    (mt.OCI_LAYER, "none"), ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                             "gzip"),
])
def test_compression_of(media_type, expected):
    assert mt.compression_of(media_type) == expected


def test_compression_unknown():
    with pytest.raises(ManifestError, match="unknown layer media type"):
        mt.compression_of("application/octet-stream")


def test_parse_manifest():
    parsed = mt.parse(manifest(), mt.DOCKER_MANIFEST)
    assert parsed.config.digest == D1
    assert [layer.digest for layer in parsed.layers] == [D2]


def test_parse_rejects_schema1():
    body = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    media_type = mt.effective_media_type("application/json", body)
    with pytest.raises(ManifestError, match="schema1"):
        mt.parse(body, media_type)


@pytest.mark.parametrize("body, error", [
    (b"not json", "not valid JSON"),
    (json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST}).encode(), "missing"),
    (manifest(layers=[{"mediaType": mt.DOCKER_LAYER_GZIP, "digest": "md5:abc", "size": 1}]),
     "malformed digest"),
    (manifest(layer_type="application/x-weird"), "unknown layer media type"),
    (manifest(config="nope"), "malformed manifest"),
])
def test_parse_errors(body, error):
    with pytest.raises(ManifestError, match=error):
        mt.parse(body, mt.DOCKER_MANIFEST)


def test_effective_media_type():
    body = manifest()
    assert mt.effective_media_type(mt.DOCKER_MANIFEST + "; charset=utf-8", body) == \
        mt.DOCKER_MANIFEST
    assert mt.effective_media_type("application/json", body) == mt.DOCKER_MANIFEST
    with pytest.raises(ManifestError, match="disagrees"):
        mt.effective_media_type(mt.OCI_MANIFEST, body)


@pytest.mark.parametrize("wanted, platforms, chosen", [
    ("linux/amd64", ["linux/arm64/v8", "linux/amd64"], 1),
    ("linux/arm64", ["linux/amd64", "linux/arm64/v8"], 1),
    ("linux/arm64/v8", ["linux/amd64", "linux/arm64"], 1),
    ("linux/arm/v7", ["linux/arm/v6", "linux/arm/v7"], 1),
    ("linux/arm", ["linux/arm/v6", "linux/arm/v7"], 1),
    ("linux/amd64", ["linux/amd64/v3", "linux/amd64"], 1),
])
def test_select_platform(wanted, platforms, chosen):
    idx = index(*platforms)
    assert mt.select_platform(idx, mt.parse_platform(wanted)) is idx.manifests[chosen]


def test_select_platform_none_lists_available():
    with pytest.raises(PlatformError, match=r"linux/s390x.*available: linux/amd64, linux/arm64"):
        mt.select_platform(index("linux/amd64", "linux/arm64"), mt.parse_platform("linux/s390x"))


@pytest.mark.parametrize("text", ["linux", "linux/", "a/b/c/d", ""])
def test_parse_platform_invalid(text):
    with pytest.raises(UsageError):
        mt.parse_platform(text)
