"""stages/plan.py's pure parts: when an index is copied whole, the config's diff_ids against
the layers, and the plan of something with no layers of its own."""

from __future__ import annotations

import json

import pytest

from occystrap import mediatypes as mt
from occystrap.config import Config
from occystrap.destinations import Destination
from occystrap.errors import DestinationError, ManifestError
from occystrap.mediatypes import Descriptor
from occystrap.reference import ImageRef, parse_location
from occystrap.sources import resolved_from_bytes
from occystrap.stages.plan import check_space, copies_whole_index, diff_ids_of, layerless_plan

D = ["sha256:" + c * 64 for c in "abcdef"]


def _dest(uri: str) -> Destination:
    return Destination(parse_location(uri, role="destination"), "tok")


@pytest.mark.parametrize(
    ("uri", "config", "whole"),
    [
        ("registry://127.0.0.1:5000/a:1", Config(), True),  # a mirror serves every platform
        ("registry://127.0.0.1:5000/a:1", Config(platform_given=True), False),
        ("oci:///srv/layout", Config(), False),
        ("oci:///srv/layout", Config(all_platforms=True), True),
        ("tar:///tmp/a.tar", Config(all_platforms=True), True),  # resolve then refuses it
    ],
)
def test_copies_whole_index(uri: str, config: Config, whole: bool) -> None:
    assert copies_whole_index(config, _dest(uri)) is whole


def _config(diff_ids: list[str]) -> bytes:
    return json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def test_diff_ids_one_per_layer() -> None:
    layers = [Descriptor(mt.OCI_LAYER_GZIP, D[0], 1), Descriptor(mt.OCI_LAYER, D[1], 2)]
    assert diff_ids_of(_config([D[2], D[1]]), layers) == [D[2], D[1]]


def test_diff_ids_of_another_count_is_refused() -> None:
    with pytest.raises(ManifestError, match="lists 1 diff_ids for 2 layers"):
        diff_ids_of(_config([D[2]]), [Descriptor(mt.OCI_LAYER_GZIP, D[0], 1)] * 2)


def test_an_uncompressed_layer_must_be_its_diff_id() -> None:
    with pytest.raises(ManifestError, match="layer 0 is an uncompressed tar"):
        diff_ids_of(_config([D[2]]), [Descriptor(mt.OCI_LAYER, D[0], 1)])


def test_layerless_plan() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode()
    got = resolved_from_bytes(body, mt.OCI_INDEX, "test")
    ref = ImageRef("127.0.0.1:5000", "a", tag="1")
    plan = layerless_plan(
        7,
        ref,
        "registry://127.0.0.1:5000/a:1",
        got,
        True,
        ImageRef("h", "mirror/a", tag="2"),
        up_to_date=True,
    )
    assert (plan.image_id, plan.manifest, plan.manifest_digest) == (7, body, got.digest)
    assert (plan.layer_count, plan.config, plan.diff_ids) == (0, b"", [])
    assert (plan.dest_name, plan.dest_tag, plan.up_to_date, plan.insecure) == (
        "mirror/a",
        "2",
        True,
        True,
    )
    plain = layerless_plan(8, ref, "x", got, False, None)
    assert (plain.dest_name, plain.dest_tag) == ("", None)


def test_check_space(tmp_path: object) -> None:
    check_space(str(tmp_path), 0)
    with pytest.raises(DestinationError, match="not enough free space"):
        check_space(str(tmp_path), 2**62)
