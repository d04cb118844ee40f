"""to_oci: Docker schema 2 manifests and lists in their OCI forms (image-spec's compatibility
table, as skopeo's oci: transport converts them). Pure: bytes in, bytes out."""

from __future__ import annotations

import hashlib
import json

import pytest

from occystrap import mediatypes as mt
from occystrap.layers.rewrite import OCI_LAYER_NONDISTRIBUTABLE_GZIP, to_oci

D = ["sha256:" + c * 64 for c in "abcdef"]


def _docker_manifest(layers: list[dict[str, object]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
                       "config": {"mediaType": mt.DOCKER_CONFIG, "size": 7, "digest": D[0]},
                       "layers": layers}).encode()


def test_docker_manifest_to_oci() -> None:
    body = _docker_manifest([
        {"mediaType": mt.DOCKER_LAYER_GZIP, "size": 10, "digest": D[1],
         "annotations": {"a": "b"}},
        {"mediaType": mt.DOCKER_LAYER_FOREIGN, "size": 11, "digest": D[2],
         "urls": ["https://example.com/layer"]},
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "size": 12,
         "digest": D[3]},
        {"mediaType": mt.OCI_LAYER_ZSTD, "size": 13, "digest": D[4]},
    ])
    out, media_type, digest = to_oci(body, mt.DOCKER_MANIFEST)
    assert media_type == mt.OCI_MANIFEST
    assert digest == "sha256:" + hashlib.sha256(out).hexdigest() != \
        "sha256:" + hashlib.sha256(body).hexdigest()
    doc = json.loads(out)
    assert doc["mediaType"] == mt.OCI_MANIFEST and doc["schemaVersion"] == 2
    assert doc["config"] == {"mediaType": mt.OCI_CONFIG, "size": 7, "digest": D[0]}
    assert [la["mediaType"] for la in doc["layers"]] == [
        mt.OCI_LAYER_GZIP, OCI_LAYER_NONDISTRIBUTABLE_GZIP, mt.OCI_LAYER, mt.OCI_LAYER_ZSTD]
    # everything else is kept: digests, sizes, annotations, urls
    source = json.loads(body)
    for ours, theirs in zip(doc["layers"], source["layers"], strict=True):
        assert {k: v for k, v in ours.items() if k != "mediaType"} == \
            {k: v for k, v in theirs.items() if k != "mediaType"}


def test_oci_documents_are_kept_byte_exact() -> None:
    body = b'{"schemaVersion":2,"mediaType":"%s","config":{},"layers":[]}' % \
        mt.OCI_MANIFEST.encode()
    assert to_oci(body, mt.OCI_MANIFEST) == (body, mt.OCI_MANIFEST,
                                             "sha256:" + hashlib.sha256(body).hexdigest())


def test_manifest_list_to_index() -> None:
    children = [{"mediaType": mt.OCI_MANIFEST, "size": 5, "digest": D[1],
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST,
                       "manifests": children}).encode()
    out, media_type, _ = to_oci(body, mt.DOCKER_MANIFEST_LIST)
    doc = json.loads(out)
    assert media_type == doc["mediaType"] == mt.OCI_INDEX
    assert doc["manifests"] == children


def test_a_list_with_docker_children_is_refused() -> None:
    """Their digests would name Docker-typed manifests: the children go first."""
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST,
                       "manifests": [{"mediaType": mt.DOCKER_MANIFEST, "size": 5,
                                      "digest": D[1]}]}).encode()
    with pytest.raises(ValueError, match="Docker-typed"):
        to_oci(body, mt.DOCKER_MANIFEST_LIST)


def test_an_unknown_layer_type_is_refused() -> None:
    body = _docker_manifest([{"mediaType": "application/x-mystery", "size": 1,
                              "digest": D[1]}])
    with pytest.raises(ValueError, match="x-mystery"):
        to_oci(body, mt.DOCKER_MANIFEST)
