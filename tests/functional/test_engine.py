"""The engine with several image jobs at once (bulk sources will feed it): -J admission,
per-image failure isolation, several images in one tarball or layout."""

from __future__ import annotations

import json
import tarfile

from occystrap import pipeline
from occystrap.config import Config
from occystrap.reference import parse_location


def run(sources: list[str], dest: str, **config):
    return pipeline.run(
        [parse_location(s, role="source") for s in sources],
        parse_location(dest, role="destination"),
        Config(insecure=True, **config),
    )


def test_several_images_into_one_tarball(registry, sample_images, tmp_path, skopeo):
    keys = ["docker", "oci", "zstd"]
    missing = f"registry://{registry.host}/library/app:nope"
    result = run(
        [sample_images[k].uri for k in keys] + [missing],
        f"tar://{tmp_path / 'all.tar'}",
        image_parallel=2,
        parallel=2,
    )
    assert result.error is None
    assert sorted(d.source for d in result.done) == sorted(sample_images[k].uri for k in keys)
    assert [f.source for f in result.failed] == [missing]
    assert "not found" in result.failed[0].reason
    with tarfile.open(tmp_path / "all.tar") as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    assert sorted(m["RepoTags"][0] for m in manifest) == sorted(sample_images[k].ref for k in keys)
    for n in range(len(keys)):
        r = skopeo("inspect", f"docker-archive:{tmp_path / 'all.tar'}:@{n}")
        assert r.returncode == 0, r.stderr


def test_one_image_at_a_time_still_finishes(sample_images, tmp_path):
    """-J 1 with an index copy: the index and its platforms share one admission slot."""
    result = run(
        [sample_images["index"].uri, sample_images["docker"].uri],
        f"oci://{tmp_path / 'layout'}",
        image_parallel=1,
        all_platforms=True,
    )
    assert result.error is None and not result.failed
    assert len(result.done) == 2
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert {m["digest"] for m in index["manifests"]} == {
        sample_images["index"].digest,
        sample_images["docker"].digest,
    }
