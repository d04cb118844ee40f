import json

import pytest

from occystrap import referrers as rf
from occystrap.mediatypes import OCI_INDEX, OCI_MANIFEST, parse
from occystrap.reference import digest_of

SUBJECT = "sha256:" + "a" * 64


def _index(*entries):
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}
    ).encode()


def test_tags():
    assert rf.fallback_tag(SUBJECT) == "sha256-" + "a" * 64
    assert rf.companion_tags(SUBJECT) == [
        f"sha256-{'a' * 64}{s}" for s in (".sig", ".att", ".sbom")
    ]
    assert all(
        rf.is_referrer_tag(t) for t in [rf.fallback_tag(SUBJECT), *rf.companion_tags(SUBJECT)]
    )
    assert not rf.is_referrer_tag("sha256-abc.sig") and not rf.is_referrer_tag("1.0")


def test_listed_and_unique():
    d = "sha256:" + "b" * 64
    body = _index(
        {"mediaType": OCI_MANIFEST, "digest": d, "size": 3, "artifactType": "application/spdx+json"}
    )
    found = rf.listed([body], SUBJECT, "here")
    assert found == [
        rf.Found(
            d,
            SUBJECT,
            artifact_type="application/spdx+json",
            descriptor=json.loads(body)["manifests"][0],
        )
    ]
    assert rf.unique(found + found) == found


def test_wanted():
    manifest = parse(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": SUBJECT,
                    "size": 2,
                },
                "layers": [{"mediaType": "text/spdx+json", "digest": SUBJECT, "size": 2}],
            }
        ).encode(),
        OCI_MANIFEST,
    )
    assert rf.wanted((), "x")
    assert rf.wanted(("a",), "a") and not rf.wanted(("a",), "b")
    assert rf.wanted(("a",), None)  # decided once fetched
    assert rf.wanted(("text/spdx+json",), None, manifest)
    assert not rf.wanted(("application/x",), None, manifest)


def test_descriptor_for_and_merged_index():
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": SUBJECT,
                "size": 2,
            },
            "layers": [],
            "annotations": {"org.example": "1"},
        }
    ).encode()
    entry = rf.descriptor_for(body, OCI_MANIFEST)
    assert entry == {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(body),
        "size": len(body),
        "artifactType": "application/vnd.oci.empty.v1+json",
        "annotations": {"org.example": "1"},
    }
    first = rf.merged_index(None, [entry])
    assert json.loads(first)["manifests"] == [entry]
    assert rf.merged_index(first, [entry]) is None  # already listed: nothing to write
    other = dict(entry, digest="sha256:" + "c" * 64)
    both = json.loads(rf.merged_index(first, [other]))
    assert [m["digest"] for m in both["manifests"]] == [entry["digest"], other["digest"]]
    for other_content in (b"not json", body):  # a manifest, say: never overwritten
        with pytest.raises(ValueError, match="left alone"):
            rf.merged_index(other_content, [entry])
