"""tar:// output imported by a real containerd (`ctr images import`, as k3s and kind load
images): found under the full normalised name docker save gives it, layers unpacked."""

from __future__ import annotations

import json
import tarfile

import pytest

from tools.imagebuilder import build_image, push_image


@pytest.fixture(scope="module")
def pushed(registry, tmp_path_factory) -> str:
    image = build_image(
        tmp_path_factory.mktemp("ctr-image"),
        seed=1950,
        layer_sizes=[40_000, 10_000],
        special_entries=False,
    )
    push_image(registry.url, "ctrd/app", "1", image)
    return f"{registry.host}/ctrd/app:1"


def _member(path, name: str) -> object:
    with tarfile.open(path) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return json.load(member)


def _import(containerd, archive, namespace: str) -> tuple[set[str], set[str]]:
    done = containerd.run("images", "import", str(archive), namespace=namespace)
    assert done.returncode == 0, done.stderr
    names = set(containerd.run("images", "ls", "-q", namespace=namespace).stdout.split())
    ready = set(containerd.run("images", "check", "-q", namespace=namespace).stdout.split())
    return names, ready


def test_docker_hub_style_name(occystrap_cli, containerd, pushed, skopeo, tmp_path):
    """A docker save tarball of `app:1` (skopeo's docker-archive, a real independent
    writer) through our tar://: containerd knows it as docker.io/library/app:1."""
    theirs, ours = tmp_path / "theirs.tar", tmp_path / "ours.tar"
    done = skopeo(
        "copy",
        "-q",
        "--src-tls-verify=false",
        f"docker://{pushed}",
        f"docker-archive:{theirs}:app:1",
    )
    assert done.returncode == 0, done.stderr
    r = occystrap_cli("process", f"tar://{theirs}", f"tar://{ours}")
    assert r.returncode == 0, r.stderr
    [entry] = _member(ours, "index.json")["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "docker.io/library/app:1"
    assert _member(ours, "manifest.json")[0]["RepoTags"] == ["app:1"]  # as docker save
    names, ready = _import(containerd, ours, "hub-style")
    assert "docker.io/library/app:1" in names
    assert "docker.io/library/app:1" in ready  # content complete and unpacked


def test_registry_name(occystrap_cli, containerd, pushed, tmp_path):
    ours = tmp_path / "ours.tar"
    r = occystrap_cli("--insecure", "process", f"registry://{pushed}", f"tar://{ours}")
    assert r.returncode == 0, r.stderr
    names, ready = _import(containerd, ours, "registry-name")
    assert pushed in names and pushed in ready


def test_oci_layout_entries_get_the_full_name(occystrap_cli, pushed, skopeo, tmp_path):
    theirs = tmp_path / "theirs.tar"
    done = skopeo(
        "copy",
        "-q",
        "--src-tls-verify=false",
        f"docker://{pushed}",
        f"docker-archive:{theirs}:team/app:2",
    )
    assert done.returncode == 0, done.stderr
    layout = tmp_path / "layout"
    r = occystrap_cli("process", f"tar://{theirs}", f"oci://{layout}")
    assert r.returncode == 0, r.stderr
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["annotations"] == {
        "io.containerd.image.name": "docker.io/team/app:2",
        "org.opencontainers.image.ref.name": "2",
    }
