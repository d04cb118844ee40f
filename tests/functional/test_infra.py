"""The test rig itself: a real registry that serves what the image builder pushed, byte-exact."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tools import imagebuilder as ib
from tools.imagebuilder import Sample
from tools.testregistry import TestRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_registry_serves_v2(registry: TestRegistry) -> None:
    assert registry.host.startswith("127.0.0.1:")
    response = httpx.get(f"{registry.url}/v2/", trust_env=False)
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_auth_registry_wants_credentials(auth_registry: TestRegistry) -> None:
    from tests.conftest import TEST_PASSWORD, TEST_USER

    with httpx.Client(base_url=auth_registry.url, trust_env=False) as client:
        anonymous = client.get("/v2/")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert client.get("/v2/", auth=(TEST_USER, TEST_PASSWORD)).status_code == 200
        assert client.get("/v2/", auth=(TEST_USER, "wrong")).status_code == 401


def test_sample_set_is_complete(sample_images: dict[str, Sample]) -> None:
    assert set(sample_images) == {"docker", "oci", "zstd", "index", "manifest_list"}
    assert sample_images["docker"].media_type == ib.DOCKER_MANIFEST
    assert sample_images["oci"].media_type == ib.OCI_MANIFEST
    assert sample_images["index"].media_type == ib.OCI_INDEX
    assert sample_images["manifest_list"].media_type == ib.DOCKER_MANIFEST_LIST
    zstd = sample_images["zstd"].built
    assert isinstance(zstd, ib.BuiltImage)
    assert {layer.media_type for layer in zstd.layers} == {ib.OCI_LAYER_ZSTD}
    assert sample_images["docker"].uri.startswith("registry://127.0.0.1:")


@pytest.mark.parametrize("key", ["docker", "oci", "zstd", "index", "manifest_list"])
def test_manifest_by_tag_is_byte_exact(
    registry: TestRegistry, sample_images: dict[str, Sample], key: str
) -> None:
    sample = sample_images[key]
    accept = ", ".join([ib.DOCKER_MANIFEST, ib.DOCKER_MANIFEST_LIST, ib.OCI_MANIFEST, ib.OCI_INDEX])
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        response = client.get(
            f"/v2/{sample.name}/manifests/{sample.tag}", headers={"Accept": accept}
        )
        assert response.status_code == 200
        assert response.content == sample.manifest
        assert response.headers["Content-Type"] == sample.media_type
        assert response.headers["Docker-Content-Digest"] == sample.digest
        assert sample.digest == "sha256:" + hashlib.sha256(response.content).hexdigest()
        by_digest = client.get(
            f"/v2/{sample.name}/manifests/{sample.digest}", headers={"Accept": accept}
        )
        assert by_digest.content == sample.manifest


@pytest.mark.parametrize("key", ["docker", "zstd", "index"])
def test_blobs_by_digest(
    registry: TestRegistry, sample_images: dict[str, Sample], key: str
) -> None:
    sample = sample_images[key]
    built = sample.built
    images = built.images if isinstance(built, ib.BuiltIndex) else [built]
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        for image in images:
            child = client.get(
                f"/v2/{sample.name}/manifests/{image.manifest_digest}",
                headers={"Accept": image.manifest_media_type},
            )
            assert child.status_code == 200 and child.content == image.manifest
            for blob in image.blobs:
                response = client.get(
                    f"/v2/{sample.name}/blobs/{blob.digest}", follow_redirects=True
                )
                assert response.status_code == 200
                assert len(response.content) == blob.size
                assert response.content == Path(blob.path).read_bytes()
                head = client.head(f"/v2/{sample.name}/blobs/{blob.digest}")
                assert int(head.headers["Content-Length"]) == blob.size


def test_push_is_idempotent_and_tagless(registry: TestRegistry, tmp_path: Path) -> None:
    image = ib.build_image(tmp_path, 99, [64 << 10], oci=True)
    ib.push_image(registry.url, "infra/tagless", None, image)
    ib.push_image(registry.url, "infra/tagless", None, image)  # blobs exist: HEAD skips them
    response = httpx.get(
        f"{registry.url}/v2/infra/tagless/manifests/{image.manifest_digest}",
        headers={"Accept": ib.OCI_MANIFEST},
        trust_env=False,
    )
    assert response.content == image.manifest
    tags = httpx.get(f"{registry.url}/v2/infra/tagless/tags/list", trust_env=False)
    assert not tags.json().get("tags")


def test_push_with_basic_auth(auth_registry: TestRegistry, tmp_path: Path) -> None:
    from tests.conftest import TEST_PASSWORD, TEST_USER

    image = ib.build_image(tmp_path, 98, [32 << 10])
    ib.push_image(auth_registry.url, "infra/auth", "v1", image, auth=(TEST_USER, TEST_PASSWORD))
    response = httpx.get(
        f"{auth_registry.url}/v2/infra/auth/manifests/v1",
        headers={"Accept": ib.DOCKER_MANIFEST},
        auth=(TEST_USER, TEST_PASSWORD),
        trust_env=False,
    )
    assert response.content == image.manifest


def test_skopeo_reads_the_samples(sample_images: dict[str, Sample], have_skopeo: bool) -> None:
    if not have_skopeo:
        pytest.skip("skopeo not installed")
    for sample in sample_images.values():
        raw = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{sample.ref}"],
            capture_output=True,
            timeout=60,
        )
        assert raw.returncode == 0, raw.stderr
        assert raw.stdout == sample.manifest


def test_registry_command_line_runs_in_foreground(tmp_path: Path) -> None:
    """``python -m tools.testregistry`` prints its URL, serves, and stops cleanly on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.testregistry", "--dir", str(tmp_path / "reg")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/v2/", trust_env=False).status_code == 200
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/v2/", trust_env=False, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_imagebuilder_command_line(registry: TestRegistry) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.imagebuilder",
            "--registry",
            registry.url,
            "--name",
            "infra/cli",
            "--tag",
            "2.0",
            "--seed",
            "4",
            "--layers",
            "64K,32K",
            "--oci",
            "--zstd",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    ref, digest, media_type = proc.stdout.split()
    assert ref == f"{registry.host}/infra/cli:2.0"
    assert media_type == ib.OCI_MANIFEST
    response = httpx.get(
        f"{registry.url}/v2/infra/cli/manifests/2.0",
        headers={"Accept": ib.OCI_MANIFEST},
        trust_env=False,
    )
    assert response.headers["Docker-Content-Digest"] == digest
