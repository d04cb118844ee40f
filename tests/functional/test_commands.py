"""`info`, `check` and `search` against the real test registry and local copies of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.functional.test_errors import _registry_blob
from tools.imagebuilder import build_image, push_image


def _json(stdout: str):
    return json.loads(stdout)


# -- info ------------------------------------------------------------------------------------


def test_info_text(occystrap_cli, sample_images):
    s = sample_images["docker"]
    r = occystrap_cli("--insecure", "info", s.uri)
    assert r.returncode == 0, r.stderr
    assert f"Digest:      {s.digest}" in r.stdout
    assert "application/vnd.docker.distribution.manifest.v2+json" in r.stdout
    assert "Platform:    linux/amd64" in r.stdout
    assert '["/usr/bin/sh"]' in r.stdout and "OCCYSTRAP_TEST=1" in r.stdout
    assert "org.opencontainers.image.title=occystrap-test" in r.stdout
    for layer in s.built.layers:
        assert layer.digest in r.stdout
    assert "Platforms:" not in r.stdout


def test_info_json(occystrap_cli, sample_images):
    s = sample_images["oci"]
    r = occystrap_cli("info", "-O", "json", "--insecure", s.uri)
    assert r.returncode == 0, r.stderr
    doc = _json(r.stdout)
    assert doc["digest"] == s.digest
    assert doc["platforms"] is None
    image = doc["image"]
    assert image["digest"] == s.digest
    assert image["config"]["os"] == "linux" and image["config"]["architecture"] == "amd64"
    assert image["config"]["entrypoint"] == ["/usr/bin/sh"]
    assert image["config"]["cmd"] == ["-c", "echo hello"]
    assert image["config"]["labels"]["occystrap.test.seed"] == "2"
    assert [(x["digest"], x["size"], x["diff_id"]) for x in image["layers"]] == [
        (lay.digest, lay.size, lay.diff_id) for lay in s.built.layers
    ]


@pytest.mark.parametrize("key", ["index", "manifest_list"])
def test_info_index_lists_platforms(occystrap_cli, sample_images, key):
    s = sample_images[key]
    r = occystrap_cli("--insecure", "info", "-O", "json", s.uri)
    assert r.returncode == 0, r.stderr
    doc = _json(r.stdout)
    assert doc["digest"] == s.digest
    assert [p["digest"] for p in doc["platforms"]] == [i.manifest_digest for i in s.built.images]
    assert "linux/amd64" in [p["platform"] for p in doc["platforms"]]
    amd64 = next(p for p in doc["platforms"] if p["platform"] == "linux/amd64")
    assert doc["image"]["digest"] == amd64["digest"]
    text = occystrap_cli("--insecure", "info", s.uri).stdout
    assert f"Platforms:   {len(s.built.images)}" in text
    for image in s.built.images:
        assert image.manifest_digest in text


def test_platform_native_is_this_machines(occystrap_cli, sample_images):
    """`--platform native`: the platform docker and skopeo default to."""
    from occystrap.cli import native_platform

    assert native_platform("x86_64") == native_platform("amd64")
    assert str(native_platform("aarch64")) == "linux/arm64"
    assert str(native_platform("armv7l")) == "linux/arm/v7"
    s = sample_images["index"]
    native = native_platform()
    if native.architecture not in [i.platform[1] for i in s.built.images]:
        pytest.skip(f"the sample index has no image for {native}")
    r = occystrap_cli("--insecure", "--platform", "native", "info", "-O", "json", s.uri)
    assert r.returncode == 0, r.stderr
    assert _json(r.stdout)["image"]["config"]["architecture"] == native.architecture


# -- check -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["docker", "zstd"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "full"])
def test_check_good_image(occystrap_cli, sample_images, key, fast):
    s = sample_images[key]
    r = occystrap_cli("--insecure", "check", *(["--fast"] if fast else []), "-O", "json", s.uri)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = _json(r.stdout)
    assert doc["ok"] and doc["errors"] == 0 and doc["warnings"] == 0, doc
    if not fast:  # the whiteouts in layer 1 were seen and found sane
        contents = [f["message"] for f in doc["findings"] if f["check"] == "contents"]
        assert len(contents) == len(s.built.layers)
        assert "1 whiteouts, 1 opaque markers" in contents[1]
    text = occystrap_cli("--insecure", "check", s.uri)
    assert text.returncode == 0 and "OK: 0 errors, 0 warnings." in text.stdout


def test_check_corrupt_layer(occystrap_cli, registry, tmp_path):
    image = build_image(tmp_path / "build", seed=931, layer_sizes=[200_000, 300_000])
    push_image(registry.url, "check/corrupt", "1.0", image)
    uri = f"registry://{registry.host}/check/corrupt:1.0"
    r = occystrap_cli("--insecure", "check", "--fast", uri)
    assert r.returncode == 0, r.stdout + r.stderr  # the metadata is fine
    blob = _registry_blob(registry, image.layers[1].digest)
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = occystrap_cli("--insecure", "--retries", "0", "check", uri)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    assert errors and all(image.layers[1].digest in ln for ln in errors), r.stdout
    assert "FAILED: 1 errors" in r.stdout
    assert "Traceback" not in r.stderr
    doc = _json(occystrap_cli("--insecure", "--retries", "0", "check", "-O", "json", uri).stdout)
    assert not doc["ok"]
    assert {f["layer"] for f in doc["findings"] if f["severity"] == "error"} == {
        image.layers[1].digest
    }


def test_check_local_corrupt_layer_and_bad_diff_id(occystrap_cli, sample_images, tmp_path):
    """In an OCI layout nothing verified the bytes on the way in: check hashes them."""
    s = sample_images["oci"]
    layout = tmp_path / "layout"
    assert occystrap_cli("--insecure", "process", s.uri, f"oci://{layout}").returncode == 0
    r = occystrap_cli("check", f"oci://{layout}")
    assert r.returncode == 0, r.stdout + r.stderr
    layer = s.built.layers[1].digest
    blob = layout / "blobs" / "sha256" / layer.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = occystrap_cli("check", "-O", "json", f"oci://{layout}")
    assert r.returncode == 1
    doc = _json(r.stdout)
    checks = {f["check"] for f in doc["findings"] if f["severity"] == "error"}
    assert "digest" in checks
    assert {f["layer"] for f in doc["findings"] if f["severity"] == "error"} == {layer}


# -- search ----------------------------------------------------------------------------------


def test_search_text(occystrap_cli, sample_images):
    s = sample_images["docker"]
    layers = s.built.layers
    r = occystrap_cli("--insecure", "search", s.uri, "/etc/*")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"Layer: {layers[0].digest}" in lines
    assert f"Layer: {layers[1].digest}" in lines
    assert "  etc/os-release (file, 33 bytes)" in lines
    assert "  etc/.wh.motd (file, 0 bytes)" in lines
    assert lines[-1] == "Found 3 matches in 2 layers."  # os-release, motd, .wh.motd
    # without the leading slash, the same
    again = occystrap_cli("--insecure", "search", s.uri, "etc/*")
    assert again.stdout == r.stdout


def test_search_types_and_no_match(occystrap_cli, sample_images):
    s = sample_images["docker"]
    r = occystrap_cli("--insecure", "search", s.uri, "usr/bin/*")
    assert "  usr/bin/sh -> busybox (symlink, 0 bytes)" in r.stdout
    assert "  usr/bin/ls -> usr/bin/busybox (hardlink, 0 bytes)" in r.stdout
    r = occystrap_cli("--insecure", "search", s.uri, "no/such/*")
    assert r.returncode == 0
    assert r.stdout.strip() == "Found 0 matches in 0 layers."


def test_search_script_friendly_and_regex(occystrap_cli, sample_images):
    s = sample_images["docker"]
    layer1 = s.built.layers[1].digest
    r = occystrap_cli("--insecure", "search", "--script-friendly", "--regex", s.uri, r"\.wh\.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"library/app:1.0:{layer1}:etc/.wh.motd",
        f"library/app:1.0:{layer1}:var/cache/.wh..wh..opq",
    ]
    doc = _json(
        occystrap_cli(
            "--insecure", "search", "-O", "json", "--regex", s.uri, r"^usr/bin/(sh|ls)$"
        ).stdout
    )
    assert doc["count"] == 2 and doc["layers"] == 1
    assert {m["type"] for m in doc["matches"]} == {"symlink", "hardlink"}


@pytest.mark.parametrize("scheme", ["oci", "tar", "dir"])
def test_local_sources(occystrap_cli, sample_images, tmp_path, scheme):
    s = sample_images["zstd"] if scheme == "oci" else sample_images["docker"]
    out = tmp_path / ("out.tar" if scheme == "tar" else "out")
    r = occystrap_cli("--insecure", "process", s.uri, f"{scheme}://{out}")
    assert r.returncode == 0, r.stderr
    uri = f"{scheme}://{out}"
    info = occystrap_cli("info", "-O", "json", uri)
    assert info.returncode == 0, info.stderr
    doc = _json(info.stdout)
    assert doc["image"]["config"]["entrypoint"] == ["/usr/bin/sh"]
    if scheme != "dir":  # dir:// stores layers uncompressed: new digests
        assert doc["digest"] == s.digest
    r = occystrap_cli("check", uri)
    assert r.returncode == 0, r.stdout + r.stderr
    r = occystrap_cli("search", "--script-friendly", uri, "var/cache/new.txt")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1
    assert r.stdout.strip().endswith(":var/cache/new.txt")
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith("occystrap-")]
