"""Copies from the real test registry to tar://, oci:// and dir://, checked byte by byte and
with skopeo as an independent reader."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile

import pytest
import zstandard

from tools.imagebuilder import BuiltImage, Sample, build_image, push_image


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def child(sample: Sample, arch: str) -> BuiltImage:
    return next(i for i in sample.built.images if i.platform[1] == arch)


def uncompressed(blob_path: str, media_type: str) -> bytes:
    with open(blob_path, "rb") as f:
        data = f.read()
    if media_type.endswith("zstd"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return gzip.decompress(data)


def assert_clean(directory, keep: set[str]) -> None:
    """Nothing but `keep` is left: no spool, no temp tar."""
    assert set(os.listdir(directory)) == keep


def test_tar_is_docker_25_layout(occystrap_cli, sample_images, tmp_path, skopeo):
    s = sample_images["docker"]
    out = tmp_path / "app.tar"
    r = occystrap_cli("--insecure", "process", s.uri, f"tar://{out}")
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tf:
        names = tf.getnames()
        assert names[-1] == "manifest.json"
        assert {"oci-layout", "index.json", "repositories"} <= set(names)
        assert not any(n.startswith(("/", "./")) or ".." in n for n in names)
        manifest = json.load(tf.extractfile("manifest.json"))
        index = json.load(tf.extractfile("index.json"))
        assert tf.extractfile(f"blobs/sha256/{s.digest[7:]}").read() == s.manifest
        for member in names:
            if member.startswith("blobs/sha256/"):
                assert sha256(tf.extractfile(member).read())[7:] == member.rsplit("/", 1)[1]
    assert manifest[0]["RepoTags"] == [s.ref]
    assert manifest[0]["Layers"] == [f"blobs/sha256/{b.digest[7:]}" for b in s.built.layers]
    assert index["manifests"][0]["digest"] == s.digest
    info = json.loads(skopeo("inspect", f"docker-archive:{out}").stdout)
    # skopeo's docker-archive reader names layers by their uncompressed digest
    assert info["Layers"] == [b.diff_id for b in s.built.layers]
    assert_clean(tmp_path, {"app.tar", "home"})


def test_tar_legacy_layout_is_uncompressed(occystrap_cli, sample_images, tmp_path, skopeo):
    s = sample_images["zstd"]
    out = tmp_path / "app.tar"
    r = occystrap_cli("--insecure", "process", s.uri, f"tar://{out}?format=v1.2")
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        layers = manifest[0]["Layers"]
        assert len(layers) == len(s.built.layers)
        for path, blob in zip(layers, s.built.layers, strict=True):
            assert sha256(tf.extractfile(path).read()) == blob.diff_id
        with open(s.built.config.path, "rb") as f:
            assert tf.extractfile(manifest[0]["Config"]).read() == f.read()
    r = skopeo("inspect", "--config", f"docker-archive:{out}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rootfs"]["diff_ids"] == [b.diff_id for b in s.built.layers]


def test_oci_layout_byte_exact_and_shared(occystrap_cli, sample_images, tmp_path, skopeo):
    layout = tmp_path / "layout"
    a, b = sample_images["docker"], sample_images["oci"]
    for s, ref in ((a, "first"), (b, "second")):
        r = occystrap_cli("--insecure", "process", s.uri, f"oci://{layout}:{ref}")
        assert r.returncode == 0, r.stderr
    index = json.loads((layout / "index.json").read_text())
    refs = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    assert refs == {"first": a.digest, "second": b.digest}
    # skopeo 1.9 lists only OCI-typed manifests from a layout; the Docker-typed one is kept
    # byte-exact (its digest is what a pinned reference names) and checked by hand.
    info = json.loads(skopeo("inspect", f"oci:{layout}:second").stdout)
    assert info["Digest"] == b.digest
    for s in (a, b):
        assert (layout / "blobs" / "sha256" / s.digest[7:]).read_bytes() == s.manifest
        for blob in s.built.layers:
            assert (
                sha256((layout / "blobs" / "sha256" / blob.digest[7:]).read_bytes()) == blob.digest
            )
    assert_clean(tmp_path, {"layout", "home"})


def test_oci_rerun_skips_present_layers(occystrap_cli, sample_images, tmp_path):
    s = sample_images["oci"]
    dest = f"oci://{tmp_path / 'layout'}"
    assert occystrap_cli("--insecure", "process", s.uri, dest).returncode == 0
    r = occystrap_cli("--insecure", "process", s.uri, dest)
    assert r.returncode == 0, r.stderr
    assert f"{len(s.built.layers)} already present" in r.stderr


def test_dir_layout(occystrap_cli, sample_images, tmp_path):
    s = sample_images["zstd"]
    out = tmp_path / "dir"
    r = occystrap_cli("--insecure", "process", s.uri, f"dir://{out}")
    assert r.returncode == 0, r.stderr
    config = s.built.config
    with open(config.path, "rb") as f:
        assert (out / f"{config.digest[7:]}.json").read_bytes() == f.read()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[0]["RepoTags"] == [s.ref]
    for path, blob in zip(manifest[0]["Layers"], s.built.layers, strict=True):
        assert path == f"{blob.digest[7:]}/layer.tar"
        data = (out / path).read_bytes()
        assert sha256(data) == blob.diff_id
        assert data == uncompressed(blob.path, blob.media_type)
    assert_clean(tmp_path, {"dir", "home"})


def test_dir_unique_names_catalog(occystrap_cli, sample_images, tmp_path):
    out = tmp_path / "dir"
    for key in ("docker", "oci"):
        r = occystrap_cli(
            "--insecure", "process", sample_images[key].uri, f"dir://{out}?unique_names=true"
        )
        assert r.returncode == 0, r.stderr
    catalog = json.loads((out / "catalog.json").read_text())
    for key in ("docker", "oci"):
        s = sample_images[key]
        name = f"{s.host}/{s.name}"
        assert name in catalog
        assert (out / catalog[name][s.tag]).exists()


@pytest.mark.parametrize(
    "key, platform, arch",
    [
        ("index", None, "amd64"),
        ("index", "linux/arm64", "arm64"),
        ("index", "linux/arm/v7", "arm"),
        ("manifest_list", "linux/arm64", "arm64"),
    ],
)
def test_platform_selection(occystrap_cli, sample_images, tmp_path, key, platform, arch):
    s = sample_images[key]
    want = child(s, arch)
    args = ["--insecure"] + (["--platform", platform] if platform else [])
    r = occystrap_cli(*args, "process", s.uri, f"oci://{tmp_path / 'layout'}")
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == want.manifest_digest


def test_platform_in_uri_options(occystrap_cli, sample_images, tmp_path):
    s = sample_images["index"]
    r = occystrap_cli(
        "--insecure", "process", f"{s.uri}?arch=arm64", f"oci://{tmp_path / 'layout'}"
    )
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == child(s, "arm64").manifest_digest


def test_no_matching_platform(occystrap_cli, sample_images, tmp_path):
    s = sample_images["index"]
    r = occystrap_cli(
        "--insecure", "--platform", "linux/s390x", "process", s.uri, f"tar://{tmp_path / 'x.tar'}"
    )
    assert r.returncode == 1
    assert "linux/s390x" in r.stderr and "linux/arm64" in r.stderr
    assert "Traceback" not in r.stderr
    assert_clean(tmp_path, {"home"})


def test_pinned_digest(occystrap_cli, sample_images, tmp_path):
    s = sample_images["oci"]
    uri = f"registry://{s.host}/{s.name}@{s.digest}"
    r = occystrap_cli("--insecure", "process", uri, f"oci://{tmp_path / 'layout'}")
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == s.digest
    assert "annotations" not in index["manifests"][0]


def test_global_options_after_command(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    r = occystrap_cli("process", s.uri, f"tar://{tmp_path / 'a.tar'}", "--insecure", "-j", "2")
    assert r.returncode == 0, r.stderr


def test_stats_json_file(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    stats = tmp_path / "stats.json"
    r = occystrap_cli(
        "--insecure", "--stats-file", str(stats), "process", s.uri, f"tar://{tmp_path / 'a.tar'}"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(stats.read_text())
    assert doc["schema"] == "occystrap.stats/2"
    assert [st["stage"] for st in doc["stages"]] == [
        "resolve",
        "fetch",
        "verify",
        "compress",
        "write",
    ]
    total = sum(b.size for b in s.built.layers)
    fetch = doc["stages"][1]
    # CPU time comes in clock ticks (10 ms): a fast fetch of a small image may show none
    assert fetch["bytes_out"] == total and fetch["cpu_seconds"] >= 0
    assert all(st["peak_pss"] > 0 for st in doc["stages"])
    assert doc["peak_pss_total"] >= max(st["peak_pss"] for st in doc["stages"])
    assert doc["bytes"] == total


def test_stats_text(occystrap_cli, sample_images, tmp_path):
    r = occystrap_cli(
        "--insecure",
        "--stats",
        "text",
        "process",
        sample_images["docker"].uri,
        f"dir://{tmp_path / 'd'}",
    )
    assert r.returncode == 0, r.stderr
    for stage in ("resolve", "fetch", "verify", "compress", "write"):
        assert f"\n{stage} " in r.stderr
    assert "peak memory of the process tree" in r.stderr


def test_several_layers_many_threads(occystrap_cli, registry, tmp_path):
    """More layers than threads: a sequential writer must not stall on fetch slots."""
    image = build_image(
        tmp_path / "build", seed=7712, layer_sizes=[30_000] * 12, special_entries=False
    )
    push_image(registry.url, "many/layers", "1.0", image)
    for dest in (f"tar://{tmp_path / 'a.tar'}", f"tar://{tmp_path / 'b.tar'}?format=v1.2"):
        r = occystrap_cli(
            "--insecure",
            "-j",
            "2",
            "process",
            f"registry://{registry.host}/many/layers:1.0",
            dest,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
    with tarfile.open(tmp_path / "a.tar") as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    assert manifest[0]["Layers"] == [f"blobs/sha256/{b.digest[7:]}" for b in image.layers]


def test_insecure_as_uri_option(occystrap_cli, sample_images, tmp_path):
    """`?insecure=true` on the source alone reaches every stage that talks to the registry."""
    s = sample_images["docker"]
    r = occystrap_cli("process", f"{s.uri}?insecure=true", f"tar://{tmp_path / 'a.tar'}")
    assert r.returncode == 0, r.stderr


def test_https_by_default(occystrap_cli, sample_images, tmp_path):
    """Without --insecure the client speaks TLS; a plain-HTTP registry then fails cleanly."""
    s = sample_images["docker"]
    r = occystrap_cli("--retries", "0", "process", s.uri, f"tar://{tmp_path / 'a.tar'}")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and s.host in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["home"]


@pytest.mark.parametrize(
    "dest",
    [
        "oci://{tmp}/layout",
        "tar://{tmp}/a.tar",
        "tar://{tmp}/b.tar?format=v1.2",
        "dir://{tmp}/dir",
        "registry://{host}/twice/copy:1",
    ],
)
def test_an_image_that_lists_a_layer_twice(occystrap_cli, registry, sample_images, tmp_path, dest):
    """Old images repeat a layer (the empty one, often): each position is its own layer."""
    import hashlib

    from tools.imagebuilder import DOCKER_CONFIG, DOCKER_MANIFEST, Blob, BuiltImage, push_image

    s = sample_images["docker"]
    layers = [s.built.layers[0], s.built.layers[1], s.built.layers[0]]
    config_bytes = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [la.diff_id for la in layers]},
        }
    ).encode()
    (tmp_path / "config").write_bytes(config_bytes)
    config = Blob(
        "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
        len(config_bytes),
        str(tmp_path / "config"),
        DOCKER_CONFIG,
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(),
            "layers": [la.descriptor() for la in layers],
        }
    ).encode()
    push_image(
        registry.url,
        "twice/src",
        "1",
        BuiltImage(
            manifest,
            DOCKER_MANIFEST,
            "sha256:" + hashlib.sha256(manifest).hexdigest(),
            config,
            layers,
        ),
    )
    target = dest.format(tmp=tmp_path, host=registry.host)
    for extra in ([], ["-f", "normalize-timestamps"]):
        r = occystrap_cli(
            "--insecure", "process", f"registry://{registry.host}/twice/src:1", target, *extra
        )
        assert r.returncode == 0, r.stderr
        check = target.split("?")[0] if "v1.2" in target else target
        r = occystrap_cli("--insecure", "check", check)
        assert r.returncode == 0, r.stdout + r.stderr
