"""--compression: layers re-encoded in the compress stage, a new manifest, same content."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest
import zstandard

from occystrap import mediatypes as mt


def inspect(skopeo, *args: str) -> dict:
    r = skopeo("inspect", "--tls-verify=false", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("key, target", [("docker", "zstd"), ("zstd", "gzip"), ("oci", "zstd")])
def test_registry_recompression(occystrap_cli, registry, sample_images, skopeo, key, target):
    s = sample_images[key]
    dest = f"{registry.host}/recompressed/{key}-{target}:1.0"
    r = occystrap_cli("--insecure", "--compression", target, "process", s.uri, f"registry://{dest}")
    assert r.returncode == 0, r.stderr
    assert "new manifest digest" in r.stderr
    manifest = json.loads(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}").stdout
    )
    want = (
        mt.OCI_LAYER_ZSTD
        if target == "zstd"
        else (mt.DOCKER_LAYER_GZIP if s.media_type == mt.DOCKER_MANIFEST else mt.OCI_LAYER_GZIP)
    )
    assert {layer["mediaType"] for layer in manifest["layers"]} == {want}
    if target == "zstd":
        assert manifest["mediaType"] == mt.OCI_MANIFEST
    # the content is the same: skopeo reads the config, whose diff_ids still hold
    config = inspect(skopeo, "--config", f"docker://{dest}")
    assert config["rootfs"]["diff_ids"] == [b.diff_id for b in s.built.layers]
    assert inspect(skopeo, f"docker://{dest}")["Digest"] != s.digest


def test_already_in_target_compression_stays_byte_exact(
    occystrap_cli, registry, sample_images, skopeo
):
    s = sample_images["zstd"]
    dest = f"{registry.host}/recompressed/same:1.0"
    r = occystrap_cli("--insecure", "--compression", "zstd", "process", s.uri, f"registry://{dest}")
    assert r.returncode == 0, r.stderr
    assert inspect(skopeo, f"docker://{dest}")["Digest"] == s.digest


def test_recompressed_oci_and_tar(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    for dest in (f"oci://{tmp_path / 'layout'}", f"tar://{tmp_path / 'app.tar'}"):
        r = occystrap_cli("--insecure", "--compression", "zstd", "process", s.uri, dest)
        assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(
        (tmp_path / "layout" / "blobs" / "sha256" / manifest_digest[7:]).read_bytes()
    )
    for layer, built in zip(manifest["layers"], s.built.layers, strict=True):
        blob = (tmp_path / "layout" / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        assert "sha256:" + hashlib.sha256(plain).hexdigest() == built.diff_id
    with tarfile.open(tmp_path / "app.tar") as tf:
        entries = json.load(tf.extractfile("manifest.json"))
        for path in entries[0]["Layers"]:
            data = tf.extractfile(path).read()
            assert (
                "sha256:" + hashlib.sha256(data).hexdigest() == "sha256:" + path.rsplit("/", 1)[1]
            )


def test_recompressed_index(occystrap_cli, registry, sample_images, skopeo):
    s = sample_images["index"]
    dest = f"{registry.host}/recompressed/multi:1.0"
    r = occystrap_cli("--insecure", "--compression", "zstd", "process", s.uri, f"registry://{dest}")
    assert r.returncode == 0, r.stderr
    index = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dest}").stdout)
    assert len(index["manifests"]) == len(s.built.images)
    old = {i.manifest_digest for i in s.built.images}
    for entry in index["manifests"]:
        assert entry["digest"] not in old
        child = json.loads(
            skopeo(
                "inspect",
                "--raw",
                "--tls-verify=false",
                f"docker://{registry.host}/recompressed/multi@{entry['digest']}",
            ).stdout
        )
        assert {la["mediaType"] for la in child["layers"]} == {mt.OCI_LAYER_ZSTD}


def test_compression_refused_for_uncompressed_destinations(occystrap_cli, sample_images, tmp_path):
    r = occystrap_cli(
        "--insecure",
        "--compression",
        "zstd",
        "process",
        sample_images["docker"].uri,
        f"dir://{tmp_path / 'd'}",
    )
    assert r.returncode == 2
    assert "does not apply" in r.stderr


def test_layer_cache_maps_each_layer_to_its_own_blob(occystrap_cli, registry, tmp_path):
    """Layers of very different sizes finish out of order; each cache entry must still name
    the blob made from that very layer (the original occystrap mixed them up)."""
    from tools.imagebuilder import build_image, push_image

    image = build_image(
        tmp_path / "build",
        seed=808,
        layer_sizes=[2_000_000, 20_000, 600_000, 5_000],
        special_entries=False,
    )
    push_image(registry.url, "cache/src", "1.0", image)
    cache = tmp_path / "cache.json"
    src = f"registry://{registry.host}/cache/src:1.0"
    r = occystrap_cli(
        "--insecure",
        "--compression",
        "zstd",
        "--layer-cache",
        str(cache),
        "process",
        src,
        f"oci://{tmp_path / 'layout'}",
    )
    assert r.returncode == 0, r.stderr
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == len(image.layers)
    for built in image.layers:
        entry = entries[f"{built.digest}|zstd|default"]
        blob = (tmp_path / "layout" / "blobs" / "sha256" / entry["digest"][7:]).read_bytes()
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        assert "sha256:" + hashlib.sha256(plain).hexdigest() == built.diff_id
        assert entry["size"] == len(blob)

    # A second run into a new tag re-uses every re-encoded blob: nothing is recompressed.
    r = occystrap_cli(
        "--insecure",
        "--compression",
        "zstd",
        "--layer-cache",
        str(cache),
        "--stats",
        "json",
        "process",
        src,
        f"oci://{tmp_path / 'layout'}:again",
    )
    assert r.returncode == 0, r.stderr
    assert f"{len(image.layers)} already present" in r.stderr
    stats = json.loads(r.stdout)
    compress = next(s for s in stats["stages"] if s["stage"] == "compress")
    assert compress["cpu_seconds"] < 1.0
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    digests = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    assert digests["again"] == next(iter(d for ref, d in digests.items() if ref != "again"))


def test_layer_cache_hit_needs_the_blob_to_exist(occystrap_cli, registry, sample_images, tmp_path):
    """A cache entry whose blob is missing at the destination is a miss, not a broken copy."""
    cache = tmp_path / "cache.json"
    s = sample_images["docker"]
    args = ["--insecure", "--compression", "zstd", "--layer-cache", str(cache), "process", s.uri]
    assert occystrap_cli(*args, f"oci://{tmp_path / 'one'}").returncode == 0
    r = occystrap_cli(*args, f"oci://{tmp_path / 'two'}")
    assert r.returncode == 0, r.stderr
    assert "already present" not in r.stderr


def test_layer_cache_mounts_across_repositories(occystrap_cli, registry, skopeo, tmp_path):
    """A re-encoded blob published in one repository is mounted into a new one on the next
    run (after a HEAD where the cache says it is): no layer is fetched or re-encoded. A bulk
    mirror re-run onto a new prefix moves no layer bytes."""
    from tests.faultproxy import FaultProxy
    from tools.imagebuilder import build_image, push_image
    from tools.testregistry import TestRegistry

    for i in range(3):
        image = build_image(
            tmp_path / f"b{i}",
            seed=8100 + i,
            layer_sizes=[300_000, 40_000],
            special_entries=False,
            shared_base_key="cache-mount-base",
        )
        push_image(registry.url, f"cache-mount/app-{i}", "1.0", image)
    cache = tmp_path / "cache.json"
    with TestRegistry() as mirror:
        args = ["--insecure", "--compression", "zstd", "--layer-cache", str(cache), "process"]
        src = f"registry://{registry.host}/cache-mount/app-*:1.0"
        r = occystrap_cli(*args, src, f"registry://{mirror.host}/first")
        assert r.returncode == 0, r.stderr
        places = {p for e in json.loads(cache.read_text())["entries"].values() for p in e["places"]}
        assert places == {f"{mirror.host}/first/cache-mount/app-{i}" for i in range(3)}
        with FaultProxy(registry.port) as wire:
            r = occystrap_cli(
                *args,
                "--stats",
                "json",
                f"registry://{wire.host}/cache-mount/app-*:1.0",
                f"registry://{mirror.host}/second",
            )
            fetched = wire.response_bytes
        assert r.returncode == 0, r.stderr
        assert "Summary: 3/3 images" in r.stderr
        assert r.stderr.count("2 blobs mounted") == 3, r.stderr  # both layers of each
        assert fetched < 20_000  # manifests and configs only: no layer came over
        stats = json.loads(r.stdout)
        compress = next(s for s in stats["stages"] if s["stage"] == "compress")
        assert compress["items_in"] == 0 or compress["cpu_seconds"] < 0.5
        for i in range(3):
            got = inspect(skopeo, "--raw", f"docker://{mirror.host}/second/cache-mount/app-{i}:1.0")
            assert all(la["mediaType"] == mt.OCI_LAYER_ZSTD for la in got["layers"])
