"""deploy/: the container image and the sharded mirror as Kubernetes runs it.

The image is built once from this checkout (tools/build-image.sh: a Debian base made with
mmdebstrap, then deploy/Containerfile) in the suite's real Docker engine. Then the Indexed Job
of deploy/mirror-job.yaml runs as N=3 containers of that image at once, each exactly as its pod
spec says (same args, environment, volumes, security context and memory limit: tests/kubelet.py
stands in for the kubelet), against a catalog of 30 images in the real test registry: every
image lands once and byte-exact, the re-run (the CronJob's pods) is a no-op, the merged report
adds up, and a pod killed mid-run and restarted (restartPolicy: OnFailure) completes the mirror
without duplicates or half-written images.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import kubelet
from tests.conftest import REPO_ROOT, TEST_PASSWORD, TEST_USER
from tests.faultproxy import FaultProxy
from tools import imagebuilder
from tools.testregistry import TestRegistry

# tools/test.sh runs a module's tests on one worker (--dist loadscope): the image is built once.
pytestmark = pytest.mark.slow

MANIFESTS = REPO_ROOT / "deploy" / "mirror-job.yaml"
TAG = "occystrap:deploy-test"
IMAGES = 30
INDEXES = 3  # of the 30, multi-platform (copied whole into a registry)
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def docker(
    sock: str, *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DOCKER_HOST": f"unix://{sock}"},
    )
    if check:
        assert r.returncode == 0, f"docker {' '.join(args[:3])}: {r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def image(docker_engine: str) -> str:
    """The image of deploy/Containerfile, built from this checkout into the test engine."""
    r = subprocess.run(
        ["bash", "tools/build-image.sh", "--tag", TAG],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "DOCKER_HOST": f"unix://{docker_engine}"},
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return TAG


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(MANIFESTS.read_text())
    }


@pytest.fixture(scope="module")
def catalog(
    registry: TestRegistry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, imagebuilder.Built]]:
    """30 images under a namespace of their own: name → what was pushed. They share a base
    layer (so the destination mounts it); a few are multi-platform indexes."""
    work = tmp_path_factory.mktemp("deploy-catalog")
    ns = f"deploy{uuid.uuid4().hex[:6]}"
    built: dict[str, imagebuilder.Built] = {}
    for i in range(IMAGES):
        name = f"{ns}/app-{i:02d}"
        if i < INDEXES:
            index = imagebuilder.build_index(
                work,
                4200 + i,
                [("linux", "amd64", None), ("linux", "arm64", "v8")],
                [96_000, 24_000],
                oci=i % 2 == 0,
                special_entries=False,
            )
            imagebuilder.push_index(registry.url, name, "1.0", index)
            built[name] = index
        else:
            img = imagebuilder.build_image(
                work,
                4200 + i,
                [160_000, 40_000 + 1000 * i, 8_000],
                oci=i % 2 == 0,
                special_entries=False,
                shared_base_key="deploy-base",
            )
            imagebuilder.push_image(registry.url, name, "1.0", img)
            built[name] = img
    return ns, built


class Mirror:
    """The Job's pods against one destination: create them, start, kill, restart, wait.

    Each pod gets the environment and volumes its pod spec describes (tests/kubelet.py); the
    stats volume (the PersistentVolumeClaim) is one directory shared by all of them.
    """

    def __init__(
        self,
        sock: str,
        image: str,
        root: Path,
        job: dict[str, Any],
        job_name: str,
        config_maps: dict[str, dict[str, str]],
        secrets: dict[str, dict[str, str]],
    ) -> None:
        self.sock, self.image, self.root, self.job_name = sock, image, root, job_name
        self.spec = kubelet.pod_spec(job)
        self.container = self.spec["containers"][0]
        self.config_maps, self.secrets = config_maps, secrets
        self.stats_dir = root / "stats"
        self.pods: dict[int, str] = {}

    def create(self, index: int) -> str:
        env = kubelet.container_env(
            self.container, self.job_name, index, self.config_maps, self.secrets
        )
        volumes = kubelet.make_volumes(
            self.spec,
            self.root / f"pod-{self.job_name}-{index}",
            self.config_maps,
            self.secrets,
            {"occystrap-mirror-stats": self.stats_dir},
        )
        args = kubelet.docker_run_args(self.spec, self.container, self.image, env, volumes)
        cid = docker(self.sock, "create", *args).stdout.strip()
        self.pods[index] = cid
        return cid

    def run_all(self, count: int) -> None:
        for k in range(count):
            self.create(k)
        for cid in self.pods.values():
            docker(self.sock, "start", cid)

    def wait(self, index: int, timeout: float = 300) -> int:
        return int(docker(self.sock, "wait", self.pods[index], timeout=timeout).stdout.strip())

    def wait_all(self, count: int) -> None:
        """Every pod ran to completion (exit 0), as the Job needs to succeed."""
        codes = {k: self.wait(k) for k in range(count)}
        assert codes == dict.fromkeys(range(count), 0), {k: self.logs(k)[-2000:] for k in codes}

    def logs(self, index: int) -> str:
        r = docker(self.sock, "logs", self.pods[index])
        return r.stdout + r.stderr

    def stats_files(self, count: int) -> list[Path]:
        return [self.stats_dir / f"{self.job_name}-{k}.json" for k in range(count)]

    def merge(self, count: int) -> tuple[int, dict[str, Any], str]:
        """`occystrap report merge -O json` in the image, over the stats volume, and the text
        form from this checkout's occystrap (one container fewer): (exit, JSON, text)."""
        files = self.stats_files(count)
        as_json = docker(
            self.sock,
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "65532:65532",
            "-v",
            f"{self.stats_dir}:/stats:ro",
            self.image,
            "report",
            "merge",
            "-O",
            "json",
            *[f"/stats/{p.name}" for p in files],
            check=False,
        )
        as_text = subprocess.run(
            [sys.executable, "-m", "occystrap", "report", "merge", *map(str, files)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
        )
        assert as_json.returncode == as_text.returncode, as_text.stderr + as_json.stderr
        return as_json.returncode, json.loads(as_json.stdout), as_text.stdout


@pytest.fixture
def make_mirror(
    docker_engine: str, image: str, manifests: dict[str, dict[str, Any]], tmp_path: Path
) -> Any:
    """make(kind, job_name, images_txt, settings, secrets) → a Mirror of that Job's pods,
    with the ConfigMaps of deploy/mirror-job.yaml (the images list replaced, settings
    added). The stopped containers go with the engine's data root at the session's end
    (removing each on vfs costs seconds)."""

    def make(
        kind: str,
        job_name: str,
        images_txt: str,
        settings: dict[str, str],
        secrets: dict[str, dict[str, str]],
    ) -> Mirror:
        config_maps = {
            "occystrap-mirror-images": {"images.txt": images_txt},
            "occystrap-mirror-settings": {
                **manifests["ConfigMap/occystrap-mirror-settings"]["data"],
                **settings,
            },
        }
        return Mirror(
            docker_engine, image, tmp_path, manifests[kind], job_name, config_maps, secrets
        )

    return make


def shard_count(manifests: dict[str, dict[str, Any]]) -> int:
    return int(manifests["Job/occystrap-mirror"]["spec"]["completions"])


def _get(client: httpx.Client, path: str, accept: str | None = None) -> httpx.Response:
    r = client.get(path, headers={"Accept": accept} if accept else {})
    assert r.status_code == 200, f"{path}: {r.status_code}"
    return r


def assert_same_image(
    src: httpx.Client, dst: httpx.Client, name: str, dst_name: str, reference: str
) -> None:
    """The destination holds the source's manifest bytes under `reference`, and every blob
    (children of an index too) hashes to its digest."""
    body = _get(src, f"/v2/{name}/manifests/{reference}", ACCEPT).content
    assert _get(dst, f"/v2/{dst_name}/manifests/{reference}", ACCEPT).content == body, dst_name
    doc = json.loads(body)
    for child in doc.get("manifests", []):
        assert_same_image(src, dst, name, dst_name, child["digest"])
    for blob in [doc["config"], *doc["layers"]] if "layers" in doc else []:
        data = _get(dst, f"/v2/{dst_name}/blobs/{blob['digest']}").content
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]


def assert_whole_mirror(
    src: httpx.Client, dst: httpx.Client, prefix: str, built: dict[str, Any]
) -> dict[str, list[str]]:
    """Every image landed, byte-exact, under its own name below `prefix`, and nothing else
    did; returns what is visible there (repository → tags)."""
    visible = visible_images(dst, prefix)
    assert visible == {f"{prefix}/{name}": ["1.0"] for name in built}
    for name in built:
        assert_same_image(src, dst, name, f"{prefix}/{name}", "1.0")
    return visible


def visible_images(dst: httpx.Client, prefix: str) -> dict[str, list[str]]:
    """repository → tags, for the repositories under `prefix` at the destination."""
    repos = _get(dst, "/v2/_catalog?n=1000").json()["repositories"]
    out = {}
    for repo in repos:
        if repo.startswith(prefix + "/"):
            r = dst.get(f"/v2/{repo}/tags/list")
            out[repo] = (r.json().get("tags") or []) if r.status_code == 200 else []
    return out


def manifest_puts(lines: list[str], prefix: str) -> Counter[str]:
    """Tag pushes per repository (`PUT /v2/<repo>/manifests/<tag>`, not by digest)."""
    puts: Counter[str] = Counter()
    for line in lines:
        m = re.fullmatch(rf"PUT /v2/({re.escape(prefix)}/\S+)/manifests/([^/:]+)", line)
        if m and not m.group(2).startswith("sha256"):
            puts[m.group(1)] += 1
    return puts


def is_index(destination: str) -> bool:
    """Whether the catalog's image at this destination is a multi-platform index."""
    return int(re.search(r"/app-(\d+):", destination).group(1)) < INDEXES  # type: ignore


def image_results(files: list[Path]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for k, path in enumerate(files):
        doc = json.loads(path.read_text())
        assert doc["run"]["shard"] == {"index": k, "count": len(files)}
        out += [(k, im) for im in doc["image_results"]]
    return out


def test_image_is_small_non_root_and_has_no_compiler(docker_engine: str, image: str) -> None:
    info = json.loads(docker(docker_engine, "image", "inspect", image).stdout)[0]
    assert info["Config"]["User"] == "65532:65532"
    assert info["Config"]["Entrypoint"] == ["/opt/occystrap/bin/occystrap"]
    assert info["Size"] < 250e6, f"{info['Size'] / 1e6:.0f} MB"
    probe = docker(
        docker_engine,
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "id -u; occystrap --version; for c in cc gcc c++ g++ clang "
        "ld make pip pip3; do command -v $c; done; ls /opt/occystrap/bin",
        check=False,
    )
    lines = probe.stdout.splitlines()
    assert lines[0] == "65532" and lines[1].startswith("occystrap, version "), lines
    assert not [line for line in lines[2:] if line.startswith("/")], lines  # no compiler
    assert "occystrap" in lines and "pip" not in lines


def test_indexed_job_mirrors_every_image_once_and_reruns_as_a_no_op(
    make_mirror: Any,
    manifests: dict[str, dict[str, Any]],
    registry: TestRegistry,
    auth_registry: TestRegistry,
    catalog: tuple[str, dict[str, Any]],
) -> None:
    ns, built = catalog
    n = shard_count(manifests)
    assert n == 3
    prefix = f"mirror{uuid.uuid4().hex[:6]}"
    images_txt = f"# the test catalog\nregistry://{registry.host}/{ns}/*:1.0\n"
    with (
        FaultProxy(auth_registry.port) as wire,
        httpx.Client(base_url=registry.url, timeout=30) as src,
        httpx.Client(
            base_url=auth_registry.url, timeout=30, auth=(TEST_USER, TEST_PASSWORD)
        ) as dst,
    ):
        settings = {
            "MIRROR_DESTINATION": f"registry://{wire.host}/{prefix}",
            "OCCYSTRAP_INSECURE": "true",
        }
        # Credentials as the Secret of env variables gives them.
        creds = {
            "occystrap-registry-credentials": {
                "OCCYSTRAP_DEST_USERNAME": TEST_USER,
                "OCCYSTRAP_DEST_PASSWORD": TEST_PASSWORD,
            }
        }
        job = make_mirror("Job/occystrap-mirror", "occystrap-mirror", images_txt, settings, creds)
        job.run_all(n)
        job.wait_all(n)

        visible = assert_whole_mirror(src, dst, prefix, built)
        # Exactly once: one tag push per image over all pods, one result in one shard's file.
        assert manifest_puts(wire.request_lines, prefix) == Counter(visible.keys())
        results = image_results(job.stats_files(n))
        assert sorted(im["destination"] for _, im in results) == sorted(
            f"registry://{wire.host}/{prefix}/{name}:1.0" for name in built
        )
        assert {im["result"] for _, im in results} == {"done"}
        assert {k for k, _ in results} == set(range(n))  # every shard had work

        code, merged, text = job.merge(n)
        assert code == 0, text
        assert merged["complete"] and merged["missing_shards"] == [] and not merged["failed"]
        assert merged["images"] == {"total": IMAGES, "copied": IMAGES, "up_to_date": 0, "failed": 0}
        docs = [json.loads(p.read_text()) for p in job.stats_files(n)]
        assert merged["bytes"]["copied"] == sum(d["bytes"] for d in docs) > 0
        assert merged["bytes"]["sent"] == sum(d["transfer"]["bytes_sent"] for d in docs) > 0
        assert merged["bytes"]["mounts"] > 0  # the shared base, mounted across repositories
        assert [s["wall_seconds"] for s in merged["shards"]] == [d["wall_seconds"] for d in docs]
        assert merged["wall_seconds"]["slowest_shard"] == max(d["wall_seconds"] for d in docs)
        assert f"mirror: {IMAGES} images from {n} of {n} shards: {IMAGES} copied" in text
        # Memory: every shard stayed under the memory its pod requests.
        requested = kubelet.quantity_bytes(job.container["resources"]["requests"]["memory"])
        assert max(d["peak_pss_total"] for d in docs) < requested

        # The nightly CronJob's pods re-run the same mirror: nothing to copy, no blob moves.
        # This time the credentials come from the mounted docker config.
        before = len(wire.request_lines)
        auth = {
            "auths": {
                wire.host: {
                    "auth": base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode()
                }
            }
        }
        nightly = make_mirror(
            "CronJob/occystrap-mirror-nightly",
            "occystrap-mirror-nightly-29000000",
            images_txt,
            settings,
            {"occystrap-docker-config": {".dockerconfigjson": json.dumps(auth)}},
        )
        nightly.run_all(n)
        nightly.wait_all(n)
        after = wire.request_lines[before:]
        assert not manifest_puts(after, prefix)
        assert not [line for line in after if "/blobs/" in line and not line.startswith("HEAD")]
        code, merged, text = nightly.merge(n)
        assert code == 0, text
        assert merged["images"] == {"total": IMAGES, "copied": 0, "up_to_date": IMAGES, "failed": 0}
        assert merged["bytes"]["sent"] == 0 and merged["bytes"]["received"] == 0
        # What the first run copied is what this one avoided; an index found up to date is
        # skipped after its HEAD, its children unread, so its layers are not counted.
        assert merged["bytes"]["avoided"] == sum(
            im["bytes"] for _, im in results if not is_index(im["destination"])
        )
        assert visible_images(dst, prefix) == visible


def test_a_killed_shard_restarts_and_completes_without_duplicates(
    make_mirror: Any,
    manifests: dict[str, dict[str, Any]],
    registry: TestRegistry,
    catalog: tuple[str, dict[str, Any]],
) -> None:
    ns, built = catalog
    n = shard_count(manifests)
    prefix = "mirror"
    images_txt = f"registry://{registry.host}/{ns}/*:1.0\n"
    with (
        TestRegistry() as target,
        FaultProxy(target.port) as wire,
        httpx.Client(base_url=registry.url, timeout=30) as src,
        httpx.Client(base_url=target.url, timeout=30) as dst,
    ):
        # A request rate that makes each shard take several seconds, so the kill lands
        # mid-run; the setting is one of the settings ConfigMap's, as a user would set it.
        settings = {
            "MIRROR_DESTINATION": f"registry://{wire.host}/{prefix}",
            "OCCYSTRAP_INSECURE": "true",
            "OCCYSTRAP_RATE_LIMIT": "15",
        }
        job = make_mirror("Job/occystrap-mirror", "occystrap-mirror", images_txt, settings, {})
        job.run_all(n)
        deadline = time.monotonic() + 120
        while "copied " not in job.logs(0):
            assert time.monotonic() < deadline, job.logs(0)
            time.sleep(0.2)
        docker(job.sock, "kill", job.pods[0])  # SIGKILL, as an OOM kill or a node would
        assert job.wait(0) == 137
        killed_at = len(wire.request_lines)
        first_attempt = job.logs(0)
        copied_first = set(
            re.findall(rf"-> registry://{re.escape(wire.host)}/(\S+):1\.0 ", first_attempt)
        )
        assert copied_first and "Summary:" not in first_attempt  # killed mid-run
        # Nothing half-written is visible: every tag there is a whole image.
        for repo, tags in visible_images(dst, prefix).items():
            for tag in tags:
                assert_same_image(src, dst, repo.removeprefix(prefix + "/"), repo, tag)
        assert not job.stats_files(n)[0].exists()  # a killed run leaves no stats file

        docker(job.sock, "start", job.pods[0])  # restartPolicy: OnFailure
        job.wait_all(n)

        visible = assert_whole_mirror(src, dst, prefix, built)
        # No image pushed twice: a second tag push only for an image whose first push the
        # kill interrupted (the killed attempt never reported it copied).
        before = manifest_puts(wire.request_lines[:killed_at], prefix)
        total = manifest_puts(wire.request_lines, prefix)
        assert set(total) == set(visible)
        twice = {repo for repo, count in total.items() if count > 1}
        assert all(total[r] == 2 and before[r] == 1 for r in twice), total
        assert not twice & copied_first

        results = image_results(job.stats_files(n))
        assert Counter(im["destination"] for _, im in results).most_common(1)[0][1] == 1
        assert len(results) == IMAGES
        restarted = [im for k, im in results if k == 0]
        assert {
            im["destination"].split("/", 3)[3].removesuffix(":1.0")
            for im in restarted
            if im["result"] == "up_to_date"
        } >= copied_first
        code, merged, text = job.merge(n)
        assert code == 0 and merged["complete"], text
        im = merged["images"]
        assert im["total"] == IMAGES and im["failed"] == 0
        assert im["up_to_date"] >= len(copied_first)
        assert im["copied"] + im["up_to_date"] == IMAGES
