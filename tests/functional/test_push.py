"""registry:// as a destination: byte-exact copies within and between real registries."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, TEST_USER
from tests.faultproxy import FaultProxy
from tools.imagebuilder import build_image, push_image


def raw_manifest(skopeo, ref: str, creds: str | None = None) -> str:
    args = ["inspect", "--raw", "--tls-verify=false"]
    if creds:
        args += ["--creds", creds]
    r = skopeo(*args, f"docker://{ref}")
    assert r.returncode == 0, r.stderr
    return r.stdout


def get_blob(url: str, name: str, digest: str, auth=None) -> bytes:
    r = httpx.get(f"{url}/v2/{name}/blobs/{digest}", auth=auth, follow_redirects=True)
    r.raise_for_status()
    return r.content


@pytest.mark.parametrize("key", ["docker", "oci", "zstd"])
def test_copy_between_repositories_is_byte_exact(
    occystrap_cli, registry, sample_images, skopeo, key
):
    s = sample_images[key]
    dest = f"{registry.host}/mirror/{key}:copy"
    r = occystrap_cli("--insecure", "process", s.uri, f"registry://{dest}")
    assert r.returncode == 0, r.stderr
    assert raw_manifest(skopeo, dest).encode() == s.manifest
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{dest}").stdout)
    assert info["Digest"] == s.digest


def test_rerun_is_skipped_with_one_head(occystrap_cli, registry, sample_images):
    s = sample_images["docker"]
    dest = f"registry://{registry.host}/mirror/rerun"
    assert occystrap_cli("--insecure", "process", s.uri, dest).returncode == 0
    r = occystrap_cli("--insecure", "process", s.uri, dest)
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stderr and "1 already up to date" in r.stderr


def test_copy_between_registries_with_auth(
    occystrap_cli, registry, auth_registry, sample_images, skopeo
):
    s = sample_images["oci"]
    dest = f"{auth_registry.host}/mirror/app:1.0"
    r = occystrap_cli("--insecure", "process", s.uri, f"registry://{dest}")
    assert r.returncode == 1
    assert "auth" in r.stderr.lower() and "Traceback" not in r.stderr

    r = occystrap_cli(
        "--insecure",
        "--dest-username",
        TEST_USER,
        "--dest-password",
        TEST_PASSWORD,
        "process",
        s.uri,
        f"registry://{dest}",
    )
    assert r.returncode == 0, r.stderr
    assert TEST_PASSWORD not in r.stderr
    assert raw_manifest(skopeo, dest, f"{TEST_USER}:{TEST_PASSWORD}").encode() == s.manifest
    for blob in s.built.layers:
        data = get_blob(auth_registry.url, "mirror/app", blob.digest, (TEST_USER, TEST_PASSWORD))
        with open(blob.path, "rb") as f:
            assert data == f.read()


def test_dest_credentials_from_environment(occystrap_cli, auth_registry, sample_images):
    s = sample_images["docker"]
    r = occystrap_cli(
        "--insecure",
        "process",
        s.uri,
        f"registry://{auth_registry.host}/mirror/env",
        env={"OCCYSTRAP_DEST_USERNAME": TEST_USER, "OCCYSTRAP_DEST_PASSWORD": TEST_PASSWORD},
    )
    assert r.returncode == 0, r.stderr


def test_pinned_digest_without_tag_pushes_by_digest(occystrap_cli, registry, sample_images, skopeo):
    s = sample_images["oci"]
    src = f"registry://{s.host}/{s.name}@{s.digest}"
    r = occystrap_cli("--insecure", "process", src, f"registry://{registry.host}/mirror/pinned")
    assert r.returncode == 0, r.stderr
    assert raw_manifest(skopeo, f"{registry.host}/mirror/pinned@{s.digest}").encode() == s.manifest


def test_interrupted_upload_resumes(occystrap_cli, registry, tmp_path):
    """The connection to the destination is cut mid-blob; the copy still lands whole."""
    image = build_image(
        tmp_path / "build", seed=404, layer_sizes=[3_000_000], special_entries=False
    )
    push_image(registry.url, "resume/src", "1.0", image)
    with FaultProxy(registry.port, cut_request_after=1_000_000, cuts=1) as proxy:
        r = occystrap_cli(
            "--insecure",
            "process",
            f"registry://{registry.host}/resume/src:1.0",
            f"registry://{proxy.host}/resume/dst:1.0",
            env={"OCCYSTRAP_BACKOFF_SCALE": "0.01"},
        )
        assert proxy.cuts_done == 1
    assert r.returncode == 0, r.stderr
    with open(image.layers[0].path, "rb") as f:
        assert get_blob(registry.url, "resume/dst", image.layers[0].digest) == f.read()


def test_same_registry_copy_mounts_blobs(occystrap_cli, registry, sample_images):
    s = sample_images["oci"]
    r = occystrap_cli("--insecure", "process", s.uri, f"registry://{registry.host}/mounted/app")
    assert r.returncode == 0, r.stderr
    assert f"{len(s.built.layers) + 1} blobs mounted" in r.stderr  # layers and config


@pytest.mark.parametrize("key", ["index", "manifest_list"])
def test_index_is_copied_whole_into_a_registry(occystrap_cli, registry, sample_images, skopeo, key):
    s = sample_images[key]
    dest = f"{registry.host}/mirror/{key}:1.0"
    r = occystrap_cli("--insecure", "process", s.uri, f"registry://{dest}")
    assert r.returncode == 0, r.stderr
    assert raw_manifest(skopeo, dest).encode() == s.manifest
    for child in s.built.images:
        ref = f"{registry.host}/mirror/{key}@{child.manifest_digest}"
        assert raw_manifest(skopeo, ref).encode() == child.manifest
    r = occystrap_cli("--insecure", "process", s.uri, f"registry://{dest}")
    assert "already up to date" in r.stderr


def test_platform_flag_copies_one_image(occystrap_cli, registry, sample_images, skopeo):
    s = sample_images["index"]
    arm = next(i for i in s.built.images if i.platform[1] == "arm64")
    dest = f"{registry.host}/mirror/one-platform:1.0"
    r = occystrap_cli(
        "--insecure", "--platform", "linux/arm64", "process", s.uri, f"registry://{dest}"
    )
    assert r.returncode == 0, r.stderr
    assert raw_manifest(skopeo, dest).encode() == arm.manifest


def test_all_platforms_into_oci_layout(occystrap_cli, sample_images, tmp_path, skopeo):
    s = sample_images["index"]
    layout = tmp_path / "layout"
    r = occystrap_cli("--insecure", "--all-platforms", "process", s.uri, f"oci://{layout}")
    assert r.returncode == 0, r.stderr
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [s.digest]
    for child in s.built.images:
        assert (
            layout / "blobs" / "sha256" / child.manifest_digest[7:]
        ).read_bytes() == child.manifest
    r = skopeo("inspect", "--override-arch", "arm64", f"oci:{layout}:1.0")
    assert r.returncode == 0, r.stderr


def test_all_platforms_refused_for_tar(occystrap_cli, sample_images, tmp_path):
    r = occystrap_cli(
        "--insecure",
        "--all-platforms",
        "process",
        sample_images["index"].uri,
        f"tar://{tmp_path / 'a.tar'}",
    )
    assert r.returncode == 1
    assert "--platform" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_tls_registry_needs_its_ca(occystrap_cli, tls_registry, sample_images, tmp_path):
    """A self-signed registry: refused by default, fine with --ca-file or --no-tls-verify."""
    s = sample_images["docker"]
    dest = f"registry://{tls_registry.host}/tls/app:1.0"
    src = f"{s.uri}?insecure=true"  # the plain-HTTP sample registry; the destination is TLS
    r = occystrap_cli("--retries", "0", "process", src, dest)
    assert r.returncode == 1
    assert "certificate" in r.stderr and "Traceback" not in r.stderr
    assert "--ca-file" in r.stderr and "--no-tls-verify" in r.stderr
    r = occystrap_cli("--ca-file", tls_registry.ca_file, "process", src, dest)
    assert r.returncode == 0, r.stderr
    r = occystrap_cli(
        "--ca-file",
        tls_registry.ca_file,
        "process",
        f"registry://{tls_registry.host}/tls/app:1.0",
        f"tar://{tmp_path / 'from-tls.tar'}",
    )
    assert r.returncode == 0, r.stderr
    r = occystrap_cli(
        "--no-tls-verify",
        "process",
        f"registry://{tls_registry.host}/tls/app:1.0",
        f"oci://{tmp_path / 'layout'}",
    )
    assert r.returncode == 0, r.stderr
