"""The layer cache file: entries keyed by source digest and settings, and the places (registry
host and repository) each re-encoded blob was published to, merged across processes."""

from __future__ import annotations

import json

import pytest

from occystrap.errors import UsageError
from occystrap.layers.cache import MAX_PLACES, LayerCache, key
from occystrap.layers.rewrite import NewDescriptor

SRC = "sha256:" + "a" * 64
NEW = NewDescriptor("sha256:" + "b" * 64, 123, "application/vnd.oci.image.layer.v1.tar+zstd")


def test_places_accumulate_most_recent_last_and_bounded(tmp_path):
    path = tmp_path / "cache.json"
    cache = LayerCache(str(path))
    k = key(SRC, "zstd", None)
    cache.record([(k, NEW, "reg:5000/a")])
    cache.record(
        [
            (k, NEW, "reg:5000/b"),
        ]
    )
    cache.record([(k, NEW, "reg:5000/a")])  # seen again: moves to the end
    hit = LayerCache(str(path)).lookup(SRC, "zstd", None)
    assert hit is not None and hit.descriptor == NEW
    assert hit.places == ("reg:5000/b", "reg:5000/a")
    for n in range(MAX_PLACES + 5):
        cache.record([(k, NEW, f"reg:5000/r{n}")])
    places = LayerCache(str(path)).lookup(SRC, "zstd", None).places
    assert len(places) == MAX_PLACES and places[-1] == f"reg:5000/r{MAX_PLACES + 4}"


def test_other_processes_entries_are_kept(tmp_path):
    path = tmp_path / "cache.json"
    one, two = LayerCache(str(path)), LayerCache(str(path))
    one.record([(key(SRC, "zstd", None), NEW, "reg/a")])
    two.record([(key(SRC, "gzip", 1), NEW, None)])
    doc = json.loads(path.read_text())
    assert set(doc["entries"]) == {key(SRC, "zstd", None), key(SRC, "gzip", 1)}
    assert doc["entries"][key(SRC, "zstd", None)]["places"] == ["reg/a"]


def test_a_new_blob_for_a_key_forgets_the_old_places(tmp_path):
    path = tmp_path / "cache.json"
    cache = LayerCache(str(path))
    cache.record([(key(SRC, "zstd", None), NEW, "reg/a")])
    other = NewDescriptor("sha256:" + "c" * 64, 9, NEW.media_type)
    cache.record([(key(SRC, "zstd", None), other, "reg/b")])
    hit = LayerCache(str(path)).lookup(SRC, "zstd", None)
    assert hit.descriptor == other and hit.places == ("reg/b",)


def test_damaged_entries_and_files(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "entries": {
                    key(SRC, "zstd", None): {"digest": "md5:x", "size": 1, "mediaType": "x"}
                },
            }
        )
    )
    assert LayerCache(str(path)).lookup(SRC, "zstd", None) is None  # a miss, not an error
    path.write_text("{not json")
    with pytest.raises(UsageError, match="cannot read it"):
        LayerCache(str(path))
