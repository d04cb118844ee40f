"""layers/rewrite.py, pure (bytes in, bytes out): the new manifests, indexes and configs of
re-encoded or filtered images, and `to_oci`, Docker schema 2 manifests and lists in their OCI
forms (image-spec's compatibility table, as skopeo's oci: transport converts them)."""

from __future__ import annotations

import hashlib
import json

import pytest

from occystrap import mediatypes as mt
from occystrap.layers.rewrite import (
    OCI_LAYER_NONDISTRIBUTABLE_GZIP,
    NewDescriptor,
    layer_media_type,
    rewrite_config,
    rewrite_index,
    rewrite_manifest,
    to_oci,
)

D = ["sha256:" + c * 64 for c in "abcdef"]


def _docker_manifest(layers: list[dict[str, object]]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "size": 7, "digest": D[0]},
            "layers": layers,
        }
    ).encode()


def test_docker_manifest_to_oci() -> None:
    body = _docker_manifest(
        [
            {
                "mediaType": mt.DOCKER_LAYER_GZIP,
                "size": 10,
                "digest": D[1],
                "annotations": {"a": "b"},
            },
            {
                "mediaType": mt.DOCKER_LAYER_FOREIGN,
                "size": 11,
                "digest": D[2],
                "urls": ["https://example.com/layer"],
            },
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                "size": 12,
                "digest": D[3],
            },
            {"mediaType": mt.OCI_LAYER_ZSTD, "size": 13, "digest": D[4]},
        ]
    )
    out, media_type, digest = to_oci(body, mt.DOCKER_MANIFEST)
    assert media_type == mt.OCI_MANIFEST
    assert (
        digest
        == "sha256:" + hashlib.sha256(out).hexdigest()
        != "sha256:" + hashlib.sha256(body).hexdigest()
    )
    doc = json.loads(out)
    assert doc["mediaType"] == mt.OCI_MANIFEST and doc["schemaVersion"] == 2
    assert doc["config"] == {"mediaType": mt.OCI_CONFIG, "size": 7, "digest": D[0]}
    assert [la["mediaType"] for la in doc["layers"]] == [
        mt.OCI_LAYER_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        mt.OCI_LAYER,
        mt.OCI_LAYER_ZSTD,
    ]
    # everything else is kept: digests, sizes, annotations, urls
    source = json.loads(body)
    for ours, theirs in zip(doc["layers"], source["layers"], strict=True):
        assert {k: v for k, v in ours.items() if k != "mediaType"} == {
            k: v for k, v in theirs.items() if k != "mediaType"
        }


def test_oci_documents_are_kept_byte_exact() -> None:
    body = (
        b'{"schemaVersion":2,"mediaType":"%s","config":{},"layers":[]}' % mt.OCI_MANIFEST.encode()
    )
    assert to_oci(body, mt.OCI_MANIFEST) == (
        body,
        mt.OCI_MANIFEST,
        "sha256:" + hashlib.sha256(body).hexdigest(),
    )


def test_manifest_list_to_index() -> None:
    children = [
        {
            "mediaType": mt.OCI_MANIFEST,
            "size": 5,
            "digest": D[1],
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        }
    ]
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": children}
    ).encode()
    out, media_type, _ = to_oci(body, mt.DOCKER_MANIFEST_LIST)
    doc = json.loads(out)
    assert media_type == doc["mediaType"] == mt.OCI_INDEX
    assert doc["manifests"] == children


def test_a_list_with_docker_children_is_refused() -> None:
    """Their digests would name Docker-typed manifests: the children go first."""
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST_LIST,
            "manifests": [{"mediaType": mt.DOCKER_MANIFEST, "size": 5, "digest": D[1]}],
        }
    ).encode()
    with pytest.raises(ValueError, match="Docker-typed"):
        to_oci(body, mt.DOCKER_MANIFEST_LIST)


def test_an_unknown_layer_type_is_refused() -> None:
    body = _docker_manifest([{"mediaType": "application/x-mystery", "size": 1, "digest": D[1]}])
    with pytest.raises(ValueError, match="x-mystery"):
        to_oci(body, mt.DOCKER_MANIFEST)


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_layer_media_types_follow_the_compression() -> None:
    assert layer_media_type("zstd", oci=False) == mt.OCI_LAYER_ZSTD  # no Docker type exists
    assert layer_media_type("gzip", oci=False) == mt.DOCKER_LAYER_GZIP
    assert layer_media_type("gzip", oci=True) == mt.OCI_LAYER_GZIP
    assert layer_media_type("none", oci=True) == mt.OCI_LAYER


def test_rewrite_config_sets_diff_ids_then_edits_and_is_reproducible() -> None:
    body = json.dumps(
        {"architecture": "amd64", "created": "x", "rootfs": {"type": "layers", "diff_ids": [D[0]]}}
    ).encode()

    def edit(doc: dict[str, object]) -> None:
        doc["created"] = "1970-01-01T00:00:00Z"

    out, digest = rewrite_config(body, [D[1], D[2]], edit)
    assert digest == _digest(out)
    doc = json.loads(out)
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [D[1], D[2]]}
    assert doc["created"] == "1970-01-01T00:00:00Z"
    assert list(doc) == ["architecture", "created", "rootfs"]  # the source's key order
    assert rewrite_config(body, [D[1], D[2]], edit) == (out, digest)


def test_rewrite_config_adds_a_missing_rootfs() -> None:
    out, _ = rewrite_config(b"{}", [D[3]], lambda doc: None)
    assert json.loads(out)["rootfs"] == {"type": "layers", "diff_ids": [D[3]]}


def test_rewrite_manifest_replaces_layers_and_drops_what_described_the_old_blobs() -> None:
    body = _docker_manifest(
        [
            {
                "mediaType": mt.DOCKER_LAYER_GZIP,
                "size": 10,
                "digest": D[1],
                "annotations": {"estargz": "offsets"},
            },
            {
                "mediaType": mt.DOCKER_LAYER_GZIP,
                "size": 11,
                "digest": D[2],
                "annotations": {"kept": "same blob"},
            },
        ]
    )
    new = [
        NewDescriptor(D[4], 20, mt.DOCKER_LAYER_GZIP),
        NewDescriptor(D[2], 11, mt.DOCKER_LAYER_GZIP),
    ]
    out, media_type, digest = rewrite_manifest(body, mt.DOCKER_MANIFEST, new, "gzip")
    assert media_type == mt.DOCKER_MANIFEST and digest == _digest(out)
    layers = json.loads(out)["layers"]
    assert [(la["digest"], la["size"]) for la in layers] == [(D[4], 20), (D[2], 11)]
    assert "annotations" not in layers[0]
    assert layers[1]["annotations"] == {"kept": "same blob"}


def test_rewrite_manifest_to_zstd_makes_a_docker_manifest_oci() -> None:
    body = _docker_manifest([{"mediaType": mt.DOCKER_LAYER_GZIP, "size": 10, "digest": D[1]}])
    config = NewDescriptor(D[5], 99, mt.DOCKER_CONFIG)
    out, media_type, _ = rewrite_manifest(
        body, mt.DOCKER_MANIFEST, [NewDescriptor(D[4], 8, mt.OCI_LAYER_ZSTD)], "zstd", config
    )
    doc = json.loads(out)
    assert media_type == doc["mediaType"] == mt.OCI_MANIFEST
    assert doc["config"] == {"mediaType": mt.OCI_CONFIG, "size": 99, "digest": D[5]}
    assert doc["layers"][0]["mediaType"] == mt.OCI_LAYER_ZSTD


def test_rewrite_manifest_refuses_another_layer_count() -> None:
    body = _docker_manifest([{"mediaType": mt.DOCKER_LAYER_GZIP, "size": 10, "digest": D[1]}])
    with pytest.raises(ValueError, match="layer count"):
        rewrite_manifest(body, mt.DOCKER_MANIFEST, [], None)


def test_rewrite_index_follows_its_children_and_leaves_out_the_dropped() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST_LIST,
            "manifests": [
                {"mediaType": mt.DOCKER_MANIFEST, "size": 1, "digest": D[1]},
                {"mediaType": mt.DOCKER_MANIFEST, "size": 2, "digest": D[2]},
                {"mediaType": mt.DOCKER_MANIFEST, "size": 3, "digest": D[3]},
            ],
        }
    ).encode()
    out, media_type, digest = rewrite_index(
        body,
        mt.DOCKER_MANIFEST_LIST,
        {D[1]: NewDescriptor(D[4], 40, mt.OCI_MANIFEST)},
        dropped=[D[3]],
    )
    doc = json.loads(out)
    assert digest == _digest(out)
    assert media_type == doc["mediaType"] == mt.OCI_INDEX  # an OCI child: an OCI index
    assert [(m["digest"], m["size"], m["mediaType"]) for m in doc["manifests"]] == [
        (D[4], 40, mt.OCI_MANIFEST),
        (D[2], 2, mt.DOCKER_MANIFEST),
    ]
