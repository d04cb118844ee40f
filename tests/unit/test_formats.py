"""Writers on their own, with hand-made plans: layout, atomicity and clean-up."""

import hashlib
import json
import os
import tarfile

import pytest

from occystrap.destinations.directory import DirectoryWriter
from occystrap.destinations.dockerarchive import DockerArchiveWriter, temp_name
from occystrap.destinations.oci import OCILayoutWriter
from occystrap.destinations.tarplan import TarPlanner
from occystrap.messages import ImagePlan, LayerDesc, decode, encode


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_plan(tmp_path, layers: list[bytes], image_id=0, tag="1.0"):
    config = json.dumps({"rootfs": {"diff_ids": [digest(b) for b in layers]}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(b),
                    "size": len(b),
                }
                for b in layers
            ],
        }
    ).encode()
    plan = ImagePlan(
        image_id=image_id,
        source="registry://h/a:1.0",
        host="h",
        name="a",
        insecure=False,
        repo_tag=f"h/a:{tag}",
        tag=tag,
        manifest=manifest,
        manifest_media_type="application/vnd.oci.image.manifest.v1+json",
        manifest_digest=digest(manifest),
        config=config,
        config_digest=digest(config),
        config_media_type="application/vnd.oci.image.config.v1+json",
        diff_ids=[digest(b) for b in layers],
        layer_count=len(layers),
    )
    descs = []
    for i, data in enumerate(layers):
        path = tmp_path / f"spool-{image_id}-{i}"
        path.write_bytes(data)
        descs.append(
            LayerDesc(
                image_id=image_id,
                index=i,
                digest=digest(data),
                size=len(data),
                media_type="application/vnd.oci.image.layer.v1.tar",
                compression="none",
                path=str(path),
            )
        )
    return plan, descs


def test_messages_roundtrip():
    msg = LayerDesc(
        image_id=1,
        index=2,
        digest="sha256:" + "0" * 64,
        size=3,
        media_type="m",
        compression="gzip",
        path="/x",
    )
    assert decode(encode(msg)) == msg


def fetch_in_place(planner: TarPlanner, plan: ImagePlan, descs: list[LayerDesc]) -> None:
    """What resolve and fetch do for tar://: plan regions, then write each blob into its own."""
    spooled = {d.index: open(d.path, "rb").read() for d in descs}
    regions = planner.plan_image(
        plan.config_digest, len(plan.config), plan.manifest_digest, len(plan.manifest), descs
    )
    plan.regions, plan.tar_end = regions, planner.end
    for d in descs:
        with open(d.path, "r+b") as f:
            f.seek(d.offset)
            f.write(spooled[d.index])


def test_docker_archive(tmp_path):
    out = tmp_path / "out.tar"
    plan, descs = make_plan(tmp_path, [b"a" * 1000, b"b" * 5000])
    w = DockerArchiveWriter(str(out), legacy=False, token="t")
    spools = [d.path for d in descs]
    fetch_in_place(w.planner(), plan, descs)
    for path in spools:
        os.unlink(path)
    w.begin_image(plan)
    w.add_config(plan)
    for d in reversed(descs):  # any order
        w.add_layer(plan, d)
    assert not out.exists()  # nothing visible until close
    w.finish_image(plan, [d.digest for d in descs])
    w.close(True)
    assert not os.path.exists(temp_name(str(out), "t"))
    with tarfile.open(out) as tf:
        names = tf.getnames()
        assert names[-1] == "manifest.json"
        manifest = json.load(tf.extractfile("manifest.json"))
        index = json.load(tf.extractfile("index.json"))
        for d in descs:
            blob = tf.extractfile(f"blobs/sha256/{d.digest[7:]}").read()
            assert digest(blob) == d.digest
    assert manifest[0]["RepoTags"] == ["h/a:1.0"]
    assert manifest[0]["Layers"] == [f"blobs/sha256/{d.digest[7:]}" for d in descs]
    assert index["manifests"][0]["digest"] == plan.manifest_digest


def test_docker_archive_failed_image_is_disowned(tmp_path):
    """Two images in one archive; the second fails after its bytes landed in place."""
    out = tmp_path / "out.tar"
    w = DockerArchiveWriter(str(out), legacy=False, token="t")
    good, good_descs = make_plan(tmp_path, [b"g" * 700], image_id=0, tag="good")
    bad, bad_descs = make_plan(tmp_path, [b"x" * 900, b"y" * 10], image_id=1, tag="bad")
    planner = w.planner()
    fetch_in_place(planner, good, good_descs)
    fetch_in_place(planner, bad, bad_descs)
    w.begin_image(good)
    w.add_config(good)
    w.begin_image(bad)
    w.add_config(bad)
    w.add_layer(good, good_descs[0])
    w.add_layer(bad, bad_descs[0])
    w.finish_image(good, [good_descs[0].digest])
    w.fail_image(bad)
    w.close(True)
    with tarfile.open(out) as tf:
        names = tf.getnames()
        manifest = json.load(tf.extractfile("manifest.json"))
    assert [m["RepoTags"] for m in manifest] == [["h/a:good"]]
    assert f"blobs/sha256/{good_descs[0].digest[7:]}" in names
    assert f"blobs/unused/{bad_descs[0].digest[7:]}" in names
    assert f"blobs/sha256/{bad_descs[0].digest[7:]}" not in names


def test_docker_archive_legacy(tmp_path):
    out = tmp_path / "out.tar"
    plan, descs = make_plan(tmp_path, [b"a" * 1000, b"b" * 5000])
    w = DockerArchiveWriter(str(out), legacy=True, token="t")
    w.begin_image(plan)
    w.add_config(plan)
    for d in reversed(descs):
        w.add_layer(plan, d)
    w.finish_image(plan, [d.digest for d in descs])
    w.close(True)
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        for d, name in zip(descs, manifest[0]["Layers"], strict=True):
            assert name == f"{d.digest[7:]}/layer.tar"
            assert digest(tf.extractfile(name).read()) == d.digest
    assert not any(os.path.exists(d.path) for d in descs)


def test_docker_archive_failure_leaves_nothing(tmp_path):
    out = tmp_path / "out.tar"
    plan, descs = make_plan(tmp_path, [b"a" * 1000])
    w = DockerArchiveWriter(str(out), legacy=True, token="t")
    w.begin_image(plan)
    w.add_config(plan)
    w.fail_image(plan)
    w.close(False)
    assert os.listdir(tmp_path) == [os.path.basename(descs[0].path)]


def test_oci_layout_shares_blobs_and_replaces_ref(tmp_path):
    root = tmp_path / "layout"
    for image_id, content in enumerate([b"x" * 10, b"y" * 10]):
        plan, descs = make_plan(tmp_path, [b"shared", content], image_id=image_id)
        w = OCILayoutWriter(str(root), None, token="t")
        w.begin_image(plan)
        w.add_config(plan)
        for d in descs:
            w.add_layer(plan, d)
        w.finish_image(plan, [d.digest for d in descs])
        w.close(True)
    index = json.loads((root / "index.json").read_text())
    assert len(index["manifests"]) == 1  # same tag: replaced
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert OCILayoutWriter.has_blob(str(root), digest(b"shared"), 6)


def test_directory_layout(tmp_path):
    root = tmp_path / "d"
    plan, descs = make_plan(tmp_path, [b"l1", b"l2"])
    w = DirectoryWriter(str(root), unique_names=True, token="t")
    w.begin_image(plan)
    w.add_config(plan)
    for d in descs:
        w.add_layer(plan, d)
    w.finish_image(plan, [d.digest for d in descs])
    w.close(True)
    assert (root / f"{plan.config_digest[7:]}.json").read_bytes() == plan.config
    catalog = json.loads((root / "catalog.json").read_text())
    assert catalog == {"h/a": {"1.0": "manifest-h_a_1.0.json"}}
    manifest = json.loads((root / "manifest-h_a_1.0.json").read_text())
    assert manifest[0]["Layers"] == [f"{d.digest[7:]}/layer.tar" for d in descs]


def test_directory_fail_removes_new_root(tmp_path):
    root = tmp_path / "d"
    plan, descs = make_plan(tmp_path, [b"l1"])
    w = DirectoryWriter(str(root), unique_names=False, token="t")
    w.begin_image(plan)
    w.add_config(plan)
    w.add_layer(plan, descs[0])
    w.fail_image(plan)
    w.close(False)
    assert not root.exists()


def test_unwritable_destination(tmp_path):
    from occystrap.errors import DestinationError

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")  # a path below a regular file fails even for root
    with pytest.raises(DestinationError, match="cannot write tarball"):
        DockerArchiveWriter(str(not_a_dir / "x.tar"), legacy=False, token="t")
    with pytest.raises(DestinationError, match="cannot create directory"):
        DirectoryWriter(str(not_a_dir / "d"), unique_names=False, token="t")
