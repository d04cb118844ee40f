import json

import pytest

from occystrap import mediatypes as mt
from occystrap.errors import ManifestError, PlatformError, UsageError

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def manifest(media_type=mt.DOCKER_MANIFEST, layer_type=mt.DOCKER_LAYER_GZIP, **extra):
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": layer_type, "digest": D2, "size": 20}],
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def index(*platforms):
    return mt.ImageIndex(
        mt.OCI_INDEX,
        [
            mt.Descriptor(mt.OCI_MANIFEST, f"sha256:{i:064x}", 1, platform=mt.parse_platform(p))
            for i, p in enumerate(platforms)
        ],
    )


@pytest.mark.parametrize(
    "media_type, expected",
    [
        (mt.DOCKER_LAYER_GZIP, "gzip"),
        (mt.OCI_LAYER_GZIP, "gzip"),
        (mt.OCI_LAYER_ZSTD, "zstd"),
        (mt.OCI_LAYER, "none"),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"),
    ],
)
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


@pytest.mark.parametrize(
    "body, error",
    [
        (b"not json", "not valid JSON"),
        (json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST}).encode(), "missing"),
        (
            manifest(layers=[{"mediaType": mt.DOCKER_LAYER_GZIP, "digest": "md5:abc", "size": 1}]),
            "malformed digest",
        ),
        (manifest(config="nope"), "malformed manifest"),
    ],
)
def test_parse_errors(body, error):
    with pytest.raises(ManifestError, match=error):
        mt.parse(body, mt.DOCKER_MANIFEST)


def test_effective_media_type():
    body = manifest()
    assert (
        mt.effective_media_type(mt.DOCKER_MANIFEST + "; charset=utf-8", body) == mt.DOCKER_MANIFEST
    )
    assert mt.effective_media_type("application/json", body) == mt.DOCKER_MANIFEST
    with pytest.raises(ManifestError, match="disagrees"):
        mt.effective_media_type(mt.OCI_MANIFEST, body)


@pytest.mark.parametrize(
    "wanted, platforms, chosen",
    [
        ("linux/amd64", ["linux/arm64/v8", "linux/amd64"], 1),
        ("linux/arm64", ["linux/amd64", "linux/arm64/v8"], 1),
        ("linux/arm64/v8", ["linux/amd64", "linux/arm64"], 1),
        ("linux/arm/v7", ["linux/arm/v6", "linux/arm/v7"], 1),
        ("linux/arm", ["linux/arm/v6", "linux/arm/v7"], 1),
        ("linux/amd64", ["linux/amd64/v3", "linux/amd64"], 1),
    ],
)
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


HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
IN_TOTO = "application/vnd.in-toto+json"


def test_parse_is_generic_about_types():
    """Any layer type, artifactType, subject and annotations parse; the verdict on whether
    it is an image is artifact_type's."""
    body = manifest(
        mt.OCI_MANIFEST,
        IN_TOTO,
        artifactType="application/spdx+json",
        subject={"mediaType": mt.OCI_MANIFEST, "digest": D3, "size": 5},
        annotations={"a": "b"},
    )
    parsed = mt.parse(body, mt.OCI_MANIFEST)
    assert parsed.subject.digest == D3 and parsed.annotations == {"a": "b"}
    assert mt.artifact_type(parsed) == "application/spdx+json"


@pytest.mark.parametrize(
    "config_type, layer_type, kind",
    [
        (mt.DOCKER_CONFIG, mt.DOCKER_LAYER_GZIP, None),
        (mt.OCI_CONFIG, mt.OCI_LAYER_ZSTD, None),
        (mt.OCI_CONFIG, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", None),
        (HELM_CONFIG, "application/vnd.cncf.helm.chart.content.v1.tar+gzip", HELM_CONFIG),
        (mt.OCI_CONFIG, IN_TOTO, IN_TOTO),  # a buildx attestation manifest
        (
            mt.OCI_CONFIG,
            "application/vnd.dev.cosign.simplesigning.v1+json",
            "application/vnd.dev.cosign.simplesigning.v1+json",
        ),
        (mt.OCI_EMPTY, "application/spdx+json", mt.OCI_EMPTY),
    ],
)
def test_artifact_type(config_type, layer_type, kind):
    doc = json.loads(manifest(mt.OCI_MANIFEST, layer_type))
    doc["config"]["mediaType"] = config_type
    assert mt.artifact_type(mt.parse(json.dumps(doc).encode(), mt.OCI_MANIFEST)) == kind


def test_zero_layers_and_foreign_layers_parse():
    assert mt.parse(manifest(mt.OCI_MANIFEST, layers=[]), mt.OCI_MANIFEST).layers == []
    foreign = {
        "mediaType": mt.DOCKER_LAYER_FOREIGN,
        "digest": D2,
        "size": 20,
        "urls": ["http://127.0.0.1:9/never"],
    }
    parsed = mt.parse(manifest(layers=[foreign]), mt.DOCKER_MANIFEST)
    assert mt.is_foreign(parsed.layers[0]) and mt.artifact_type(parsed) is None


def test_select_platform_skips_attestations():
    amd64 = mt.Descriptor(mt.OCI_MANIFEST, D1, 1, platform=mt.parse_platform("linux/amd64"))
    attestation = mt.Descriptor(
        mt.OCI_MANIFEST,
        D2,
        1,
        platform=mt.Platform("unknown", "unknown"),
        annotations={mt.REFERENCE_TYPE: mt.ATTESTATION_MANIFEST, mt.REFERENCE_DIGEST: D1},
    )
    idx = mt.ImageIndex(mt.OCI_INDEX, [attestation, amd64])
    assert mt.select_platform(idx, mt.parse_platform("linux/amd64")) is amd64
    with pytest.raises(PlatformError, match=r"available: linux/amd64\)"):
        mt.select_platform(idx, mt.Platform("unknown", "unknown"))
    assert mt.is_attestation(attestation) and not mt.is_attestation(amd64)


def test_referrer_types():
    doc = json.loads(manifest(mt.OCI_MANIFEST, "application/vnd.dev.cosign.simplesigning.v1+json"))
    parsed = mt.parse(json.dumps(doc).encode(), mt.OCI_MANIFEST)
    assert "application/vnd.dev.cosign.simplesigning.v1+json" in mt.referrer_types(parsed)
