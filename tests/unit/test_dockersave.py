"""The rules `dockersave` reads a `docker save` archive's metadata by, on archives made in
memory (the functional tests run the same shapes through every destination and reader)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from occystrap.errors import ManifestError, NotFoundError
from occystrap.reference import normalized_name
from occystrap.sources.archiveimages import ArchiveLayer, Item, disagreement
from occystrap.sources.dockersave import ArchiveReader
from occystrap.sources.tarball import compression_of_file

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
PLAIN = "application/vnd.oci.image.layer.v1.tar"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(name)
        tar.addfile(info, io.BytesIO(name.encode()))
    return buf.getvalue()


class Archive:
    """Members in memory, answering as the tarball source does."""

    where = "tar:///srv/app.tar"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.meta: dict[str, bytes] = {}

    def blob(self, data: bytes) -> str:
        self.files[f"blobs/sha256/{sha(data)[7:]}"] = data
        return sha(data)

    def digest_of(self, name: str) -> tuple[str, int, str]:
        data = self.read(name)
        kind = "gzip" if data[:2] == b"\x1f\x8b" else "none"
        return sha(data), len(data), kind

    def read(self, name: str) -> bytes:
        if name not in self.files:
            raise NotFoundError(f"{self.where}: {name}: not in the archive")
        return self.files[name]

    def blob_members(self) -> list[tuple[str, int]]:
        return [(n, len(d)) for n, d in self.files.items() if n.startswith("blobs/")]

    def reading(self):
        return ArchiveReader(self, self.meta).read()


def image(
    archive: Archive,
    seed: str,
    *,
    gz: bool = False,
    diff_ids: list[str] | None = None,
    layers: int = 2,
) -> tuple[str, list[str], list[dict]]:
    """Blobs for one image; returns (config digest, layer members, layer descriptors)."""
    plain = [layer_tar(f"{seed}-{n}") for n in range(layers)]
    blobs = [gzip.compress(p, mtime=0) if gz else p for p in plain]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(p) for p in plain]},
        }
    ).encode()
    config_digest = archive.blob(config)
    descriptors = [
        {"mediaType": GZIP if gz else PLAIN, "digest": archive.blob(b), "size": len(b)}
        for b in blobs
    ]
    return config_digest, [f"blobs/sha256/{d['digest'][7:]}" for d in descriptors], descriptors


def manifest(archive: Archive, config_digest: str, layers: list[dict]) -> dict:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": 1,
            },
            "layers": layers,
        }
    ).encode()
    return {"mediaType": OCI_MANIFEST, "digest": archive.blob(body), "size": len(body)}


def label(offer) -> str:
    return f"{offer.ref.name}:{offer.ref.tag}"


def named(descriptor: dict, tag: str) -> dict:
    return {
        **descriptor,
        "annotations": {
            "io.containerd.image.name": normalized_name(tag),
            "org.opencontainers.image.ref.name": tag.split(":")[1],
        },
    }


def write(
    archive: Archive,
    items: list[tuple[str, list[str], list[str] | None]],
    index: list[dict] | None | str = "absent",
) -> None:
    archive.meta["manifest.json"] = json.dumps(
        [
            {"Config": f"blobs/sha256/{c[7:]}", "RepoTags": tags, "Layers": members}
            for c, members, tags in items
        ]
    ).encode()
    if index != "absent":
        archive.meta["index.json"] = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}
        ).encode()


def test_agreeing_index_keeps_the_manifest_and_names_by_repotag():
    a = Archive()
    config, members, layers = image(a, "a")
    d = manifest(a, config, layers)
    write(a, [(config, members, ["app:1"])], [named(d, "app:1")])
    r = a.reading()
    assert [(label(o), o.reference) for o in r.offers] == [("app:1", d["digest"])]
    assert r.notes == [] and r.rebuilt == {}


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda ls: [], "it lists 0 layers, manifest.json 2"),
        (lambda ls: ls[::-1], "its layer 0 is sha256:"),
        (lambda ls: [{**x, "size": x["size"] + 1} for x in ls], "its layer 0 is 10241 bytes"),
        (lambda ls: [{**x, "mediaType": GZIP} for x in ls], "but blobs/sha256/"),
    ],
)
def test_disagreeing_manifest_is_rebuilt_from_manifest_json(change, why):
    a = Archive()
    config, members, layers = image(a, "a")
    d = manifest(a, config, change(layers))
    write(a, [(config, members, ["app:1"])], [named(d, "app:1")])
    r = a.reading()
    (offer,) = r.offers
    assert offer.reference != d["digest"] and offer.reference in r.rebuilt
    rebuilt = json.loads(r.rebuilt[offer.reference].manifest)
    assert rebuilt["layers"] == layers  # manifest.json's order, the archive's sizes and types
    assert len(r.notes) == 1 and why in r.notes[0]
    assert r.notes[0].startswith("tar:///srv/app.tar: blobs/sha256/")


def test_manifests_null_reads_manifest_json_and_finds_the_manifest_in_blobs():
    a = Archive()
    config, members, layers = image(a, "a")
    d = manifest(a, config, layers)
    write(a, [(config, members, None)], None)
    r = a.reading()
    (offer,) = r.offers
    assert offer.reference == d["digest"]  # Docker's own manifest, byte-exact
    assert offer.ref.tag is None
    assert '"manifests": null' in r.notes[0]


def test_every_image_of_manifest_json_is_offered():
    a = Archive()
    c1, m1, l1 = image(a, "a")
    c2, m2, _ = image(a, "b", layers=1)
    d1 = manifest(a, c1, l1)
    write(a, [(c1, m1, ["app:1"]), (c2, m2, ["other:2"])], [named(d1, "app:1")])
    r = a.reading()
    assert [label(o) for o in r.offers] == ["app:1", "other:2"]
    assert r.offers[1].reference in r.rebuilt


def test_contradictions_fail_that_image_only():
    a = Archive()
    c1, m1, _ = image(a, "a")
    c2, m2, _ = image(a, "b", diff_ids=["sha256:" + "0" * 64, "sha256:" + "1" * 64])
    c3, m3, _ = image(a, "c", layers=1, diff_ids=["sha256:" + "2" * 64] * 2)
    write(a, [(c1, m1, ["app:1"]), (c2, m2, ["bad:1"]), (c3, m3, ["short:1"])])
    r = a.reading()
    assert [o.error is None for o in r.offers] == [True, False, False]
    assert r.offers[1].error.startswith("tar:///srv/app.tar: bad:1: layer 0 (blobs/sha256/")
    assert "is an uncompressed tar hashing to" in r.offers[1].error
    assert "short:1: manifest.json lists 1 layers, its config blobs/sha256/" in r.offers[2].error


def test_missing_layer_member_fails_that_image():
    a = Archive()
    config, members, _ = image(a, "a")
    write(a, [(config, [members[0], "blobs/sha256/" + "f" * 64], ["app:1"])])
    (offer,) = a.reading().offers
    assert offer.error == (
        f"tar:///srv/app.tar: app:1: blobs/sha256/{'f' * 64}: not in the archive"
    )


def test_index_only_image_is_offered_with_a_note():
    a = Archive()
    c1, m1, l1 = image(a, "a")
    c2, _, l2 = image(a, "b")
    d1, d2 = manifest(a, c1, l1), manifest(a, c2, l2)
    write(a, [(c1, m1, ["app:1"])], [named(d1, "app:1"), named(d2, "extra:1")])
    r = a.reading()
    assert [label(o) for o in r.offers] == ["app:1", "library/extra:1"]
    assert "which manifest.json does not" in r.notes[0]


def test_malformed_index_is_ignored_beside_manifest_json():
    a = Archive()
    config, members, _ = image(a, "a")
    write(a, [(config, members, ["app:1"])])
    a.meta["index.json"] = b"[1, 2]"
    r = a.reading()
    assert len(r.offers) == 1 and "index.json ignored" in r.notes[0]


def test_nested_index_remembers_the_absent_platforms():
    a = Archive()
    config, members, layers = image(a, "amd", gz=True)
    present = manifest(a, config, layers)
    absent = {
        "mediaType": OCI_MANIFEST,
        "digest": sha(b"arm64 manifest"),
        "size": 14,
        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
    }
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {**present, "platform": {"os": "linux", "architecture": "amd64"}},
                absent,
            ],
        }
    ).encode()
    top = {"mediaType": OCI_INDEX, "digest": a.blob(index), "size": len(index)}
    write(a, [(config, members, ["multi:1"])], [named(top, "multi:1")])
    r = a.reading()
    (offer,) = r.offers
    assert offer.reference == top["digest"] and label(offer) == "multi:1"
    why = r.absent[absent["digest"]]
    assert "lists linux/arm64/v8" in why and "it has linux/amd64: pick one with" in why


def test_oci_archive_without_manifest_json():
    a = Archive()
    config, _, layers = image(a, "a")
    d = manifest(a, config, layers)
    a.meta["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [named(d, "x:1")]}).encode()
    assert [o.reference for o in a.reading().offers] == [d["digest"]]
    a.meta["index.json"] = b'{"schemaVersion": 2, "manifests": null}'
    with pytest.raises(ManifestError, match="index.json"):
        a.reading()
    del a.meta["index.json"]
    with pytest.raises(ManifestError, match="neither manifest.json nor index.json"):
        a.reading()


def test_disagreement_none_when_equal():
    a = Archive()
    config, members, layers = image(a, "a")
    from occystrap.mediatypes import parse

    body = a.read(f"blobs/sha256/{manifest(a, config, layers)['digest'][7:]}")
    item = Item(1, [], config_digest=config)
    item.layers = [ArchiveLayer(m, *a.digest_of(m)) for m in members]
    assert disagreement(parse(body, OCI_MANIFEST), item) is None


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"", "none"),
        (b"\x1f\x8b\x08", "gzip"),
        (b"\x28\xb5\x2f\xfd\x00", "zstd"),
        (b"etc/", "none"),
    ],
)
def test_compression_of_file(tmp_path, data, kind):
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert compression_of_file(str(path)) == kind


def test_index_only_image_that_contradicts_itself_fails():
    a = Archive()
    c1, m1, l1 = image(a, "a")
    c2, _, l2 = image(a, "b")
    d1 = manifest(a, c1, l1)
    d2 = manifest(a, c2, [{**x, "size": x["size"] + 1} for x in l2])
    write(a, [(c1, m1, ["app:1"])], [named(d1, "app:1"), named(d2, "extra:1")])
    offers = a.reading().offers
    assert offers[1].error.startswith(
        "tar:///srv/app.tar: extra:1: its layer 0 is 10241 bytes, blobs/sha256/"
    )


def test_oci_archive_entry_whose_manifest_is_absent_fails_alone():
    a = Archive()
    config, _, layers = image(a, "a")
    d = manifest(a, config, layers)
    gone = {"mediaType": OCI_MANIFEST, "digest": sha(b"gone"), "size": 4}
    a.meta["index.json"] = json.dumps(
        {"schemaVersion": 2, "manifests": [named(d, "x:1"), named(gone, "y:1")]}
    ).encode()
    offers = a.reading().offers
    assert offers[0].error is None
    assert offers[1].error == (
        f"tar:///srv/app.tar: blobs/sha256/{gone['digest'][7:]}: not in the archive"
    )


def test_index_entry_without_its_manifest():
    """Named like an image of manifest.json: that image is copied (a note says what was
    missing); named like nothing: a failed entry, not a silent drop."""
    a = Archive()
    config, members, _ = image(a, "a")
    gone = {"mediaType": OCI_MANIFEST, "digest": sha(b"gone"), "size": 4}
    write(a, [(config, members, ["app:1"])], [named(gone, "app:1")])
    r = a.reading()
    assert [(label(o), o.error) for o in r.offers] == [("app:1", None)]
    assert "which is not in the archive" in r.notes[0]
    write(a, [(config, members, ["app:1"])], [named(gone, "lost:1")])
    r = a.reading()
    assert r.offers[1].error.endswith("which is neither in blobs/ nor in manifest.json")


def test_oci_archive_index_with_a_broken_child_fails_alone():
    a = Archive()
    config, _, layers = image(a, "a")
    d = manifest(a, config, layers)
    liar = {"mediaType": OCI_MANIFEST, "digest": sha(b"other bytes"), "size": 11}
    a.files[f"blobs/sha256/{liar['digest'][7:]}"] = b'{"schemaVersion": 2}'
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d, liar]}
    ).encode()
    top = {"mediaType": OCI_INDEX, "digest": a.blob(index), "size": len(index)}
    a.meta["index.json"] = json.dumps(
        {"schemaVersion": 2, "manifests": [named(top, "m:1")]}
    ).encode()
    (offer,) = a.reading().offers
    assert offer.error.startswith(f"tar:///srv/app.tar: index {top['digest']}: blobs/sha256/")
    assert "hashes to" in offer.error
