"""`?media_types=oci`: Docker manifests and lists written in their OCI forms, for readers that
take nothing else (umoci; skopeo before 1.14, which Debian 12 ships), as skopeo's `oci:`
transport writes them. The default keeps every byte (tests/functional/test_copy.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tools import imagebuilder as ib

UMOCI = shutil.which("umoci")


def umoci(*args: str) -> subprocess.CompletedProcess[str]:
    if UMOCI is None:
        pytest.skip("umoci not installed (tools/setup.sh installs it)")
    return subprocess.run([UMOCI, *args], capture_output=True, text=True, timeout=120, check=False)


def _index(layout: Path) -> dict:
    return json.loads((layout / "index.json").read_text())


def _blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def _unpack(layout: Path, ref: str, bundle: Path) -> None:
    done = umoci("unpack", "--rootless", "--image", f"{layout}:{ref}", str(bundle))
    assert done.returncode == 0, done.stderr
    assert (
        (bundle / "rootfs" / "etc" / "os-release").read_bytes().startswith(b"NAME=occystrap-test")
    )


def test_umoci_refuses_the_byte_exact_layout(occystrap_cli, sample_images, tmp_path):
    """Why the option exists: a Docker-typed entry is not an image to umoci."""
    sample = sample_images["docker"]
    layout = tmp_path / "layout"
    r = occystrap_cli("--insecure", "process", sample.uri, f"oci://{layout}")
    assert r.returncode == 0, r.stderr
    assert (
        umoci(
            "unpack", "--rootless", "--image", f"{layout}:1.0", str(tmp_path / "bundle")
        ).returncode
        != 0
    )


def test_docker_manifest_converted(occystrap_cli, sample_images, skopeo, tmp_path):
    sample = sample_images["docker"]
    layout = tmp_path / "layout"
    r = occystrap_cli("--insecure", "process", sample.uri, f"oci://{layout}?media_types=oci")
    assert r.returncode == 0, r.stderr
    [entry] = _index(layout)["manifests"]
    assert entry["mediaType"] == ib.OCI_MANIFEST and entry["digest"] != sample.digest
    # the summary says so, with both digests
    assert "converted to OCI media types" in r.stderr
    assert sample.digest in r.stderr and entry["digest"] in r.stderr
    ours = json.loads(_blob(layout, entry["digest"]))
    source = json.loads(sample.manifest)
    assert ours["config"]["mediaType"] == ib.OCI_CONFIG
    assert [la["mediaType"] for la in ours["layers"]] == [ib.OCI_LAYER_GZIP] * 3
    # config and layers keep their bytes: same digests and sizes as the source's
    assert [(d["digest"], d["size"]) for d in [ours["config"], *ours["layers"]]] == [
        (d["digest"], d["size"]) for d in [source["config"], *source["layers"]]
    ]
    _unpack(layout, "1.0", tmp_path / "bundle")
    # the same document as skopeo's own conversion, but for the config: skopeo re-encodes
    # it through the OCI config struct (new digest, Docker-only fields dropped); we keep its
    # bytes, and so the image ID (docs/conventions.md)
    theirs = tmp_path / "skopeo-layout"
    done = skopeo(
        "copy", "-q", "--src-tls-verify=false", f"docker://{sample.ref}", f"oci:{theirs}:1.0"
    )
    assert done.returncode == 0, done.stderr
    [their_entry] = _index(theirs)["manifests"]
    their_manifest = json.loads(_blob(theirs, their_entry["digest"]))
    their_config = their_manifest.pop("config")
    our_config = ours.pop("config")
    assert their_manifest == ours
    assert their_config["mediaType"] == our_config["mediaType"]
    # and skopeo 1.9 (Debian 12), which lists only OCI-typed entries, reads ours
    done = skopeo("inspect", "--raw", f"oci:{layout}:1.0")
    assert done.returncode == 0, done.stderr


def test_manifest_list_converted(occystrap_cli, sample_images, skopeo, tmp_path):
    sample = sample_images["manifest_list"]
    layout = tmp_path / "layout"
    r = occystrap_cli(
        "--insecure", "--all-platforms", "process", sample.uri, f"oci://{layout}?media_types=oci"
    )
    assert r.returncode == 0, r.stderr
    [entry] = _index(layout)["manifests"]
    assert entry["mediaType"] == ib.OCI_INDEX
    index = json.loads(_blob(layout, entry["digest"]))
    assert index["mediaType"] == ib.OCI_INDEX
    source = json.loads(sample.manifest)
    assert [m["platform"] for m in index["manifests"]] == [
        m["platform"] for m in source["manifests"]
    ]
    for child in index["manifests"]:
        assert child["mediaType"] == ib.OCI_MANIFEST
        manifest = _blob(layout, child["digest"])  # present, and its digest checks out
        assert child["size"] == len(manifest)
        assert json.loads(manifest)["mediaType"] == ib.OCI_MANIFEST
    assert "converted to OCI media types" in r.stderr
    # skopeo 1.9 picks its platform from the converted index and reads that image
    done = skopeo("inspect", f"oci:{layout}:1.0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["Architecture"] == "amd64"


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64/v8"])
def test_platform_of_a_manifest_list_for_umoci(occystrap_cli, sample_images, tmp_path, platform):
    """umoci takes one image per reference (an index is "ambiguous" to it): each platform
    of a Docker manifest list, converted, unpacks."""
    layout = tmp_path / "layout"
    r = occystrap_cli(
        "--insecure",
        "--platform",
        platform,
        "process",
        sample_images["manifest_list"].uri,
        f"oci://{layout}:img?media_types=oci",
    )
    assert r.returncode == 0, r.stderr
    _unpack(layout, "img", tmp_path / "bundle")
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["process"]["args"] == ["/usr/bin/sh", "-c", "echo hello"]


def test_oci_sources_stay_byte_exact(occystrap_cli, sample_images, tmp_path):
    sample = sample_images["oci"]
    layout = tmp_path / "layout"
    r = occystrap_cli("--insecure", "process", sample.uri, f"oci://{layout}?media_types=oci")
    assert r.returncode == 0, r.stderr
    assert _index(layout)["manifests"][0]["digest"] == sample.digest
    assert "converted" not in r.stderr


def test_tarball_oci_part_converted(occystrap_cli, sample_images, skopeo, tmp_path):
    sample = sample_images["docker"]
    archive = tmp_path / "app.tar"
    r = occystrap_cli("--insecure", "process", sample.uri, f"tar://{archive}?media_types=oci")
    assert r.returncode == 0, r.stderr
    layout = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(layout, filter="data")
    [entry] = _index(layout)["manifests"]
    assert entry["mediaType"] == ib.OCI_MANIFEST
    # layers were written in place as planned; the source manifest's planned region is an
    # unused member and the converted manifest follows the last region
    hex_ = entry["digest"].split(":", 1)[1]
    assert f"blobs/sha256/{hex_}" in names
    assert f"blobs/unused/{sample.digest.split(':', 1)[1]}" in names
    assert f"blobs/sha256/{sample.digest.split(':', 1)[1]}" not in names
    done = skopeo("inspect", f"docker-archive:{archive}")  # reads the manifest.json part
    assert done.returncode == 0, done.stderr
    [legacy] = json.loads((layout / "manifest.json").read_text())
    assert legacy["RepoTags"] == [sample.ref]
    _unpack(layout, "1.0", tmp_path / "bundle")
    # and our own reader takes it back
    r = occystrap_cli("check", f"tar://{archive}")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "uri",
    [
        "oci://{tmp}/l?media_types=docker",
        "dir://{tmp}/d?media_types=oci",
        "tar://{tmp}/t.tar?format=v1.2&media_types=oci",
    ],
)
def test_media_types_option_is_checked(occystrap_cli, sample_images, tmp_path, uri):
    r = occystrap_cli(
        "--insecure", "process", sample_images["docker"].uri, uri.format(tmp=tmp_path)
    )
    assert r.returncode == 2 and "media_types" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
