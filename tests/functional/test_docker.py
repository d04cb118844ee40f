"""docker:// in and out, against a real Docker engine started by the tests."""

from __future__ import annotations

import json
import os
import subprocess

import pytest


def api(sock: str, path: str) -> dict:
    r = subprocess.run(
        ["curl", "-s", "--unix-socket", sock, f"http://x/v1.41{path}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(r.stdout)


def ok(r) -> None:
    assert r.returncode == 0, r.stderr


def test_registry_to_docker_and_back(
    occystrap_cli, docker_engine, registry, sample_images, tmp_path, skopeo
):
    s = sample_images["docker"]
    where = f"?socket={docker_engine}"
    ok(occystrap_cli("--insecure", "process", s.uri, f"docker://occy/app:1{where}"))
    info = api(docker_engine, "/images/occy/app:1/json")
    assert info["RepoTags"] == ["occy/app:1"]
    assert info["Id"] == s.built.config.digest
    assert info["RootFS"]["Layers"] == [b.diff_id for b in s.built.layers]

    # docker:// → tar:// → registry, the uncompressed layers' digests preserved
    ok(occystrap_cli("process", f"docker://occy/app:1{where}", f"tar://{tmp_path / 'd.tar'}"))
    dest = f"{registry.host}/fromdocker/app:1"
    ok(occystrap_cli("--insecure", "process", f"tar://{tmp_path / 'd.tar'}", f"registry://{dest}"))
    r = skopeo("inspect", "--config", "--tls-verify=false", f"docker://{dest}")
    assert json.loads(r.stdout)["rootfs"]["diff_ids"] == [b.diff_id for b in s.built.layers]


def test_tarball_written_by_us_loads_into_docker(
    occystrap_cli, docker_engine, sample_images, tmp_path
):
    """Our tar:// (Docker >= 25 shape, compressed blobs) through the engine's own loader."""
    s = sample_images["oci"]
    ok(occystrap_cli("--insecure", "process", s.uri, f"tar://{tmp_path / 'a.tar'}"))
    with open(tmp_path / "a.tar", "rb") as f:
        r = subprocess.run(
            [
                "curl",
                "-s",
                "--unix-socket",
                docker_engine,
                "-X",
                "POST",
                "-H",
                "Content-Type: application/x-tar",
                "--data-binary",
                "@-",
                "http://x/v1.41/images/load",
            ],
            stdin=f,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "Loaded image" in r.stdout, r.stdout
    info = api(docker_engine, f"/images/{s.ref}/json")
    assert info["RootFS"]["Layers"] == [b.diff_id for b in s.built.layers]


def test_zstd_into_an_old_engine_says_what_to_do(occystrap_cli, docker_engine, sample_images):
    version = api(docker_engine, "/version")["Version"]
    if int(version.split(".")[0]) >= 23:
        pytest.skip(f"engine {version} loads zstd layers")
    s = sample_images["zstd"]
    r = occystrap_cli("--insecure", "process", s.uri, f"docker://occy/z:1?socket={docker_engine}")
    assert r.returncode == 1
    assert "--compression gzip" in r.stderr and "Traceback" not in r.stderr
    ok(
        occystrap_cli(
            "--insecure",
            "--compression",
            "gzip",
            "process",
            s.uri,
            f"docker://occy/z:1?socket={docker_engine}",
        )
    )
    assert api(docker_engine, "/images/occy/z:1/json")["RootFS"]["Layers"] == [
        b.diff_id for b in s.built.layers
    ]


def test_missing_image_and_missing_engine(occystrap_cli, docker_engine, tmp_path):
    r = occystrap_cli(
        "process", f"docker://nope:1?socket={docker_engine}", f"tar://{tmp_path / 'x.tar'}"
    )
    assert r.returncode == 1 and "not found" in r.stderr
    r = occystrap_cli(
        "process", f"docker://nope:1?socket={tmp_path / 'no.sock'}", f"tar://{tmp_path / 'x.tar'}"
    )
    assert r.returncode == 1 and "cannot reach the Docker engine" in r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_podman_loads_our_tarball(occystrap_cli, sample_images, tmp_path):
    """`podman load` reads our tar:// too (its own vfs store in a temp dir)."""
    import shutil

    if not shutil.which("podman"):
        pytest.skip("podman not installed (tools/setup.sh installs it)")
    s = sample_images["docker"]
    ok(occystrap_cli("--insecure", "process", s.uri, f"tar://{tmp_path / 'a.tar'}"))
    import tempfile

    run_root = tempfile.mkdtemp(prefix="pm-", dir="/tmp")  # podman wants it under 50 chars
    store = [
        "podman",
        "--storage-driver",
        "vfs",
        "--root",
        str(tmp_path / "root"),
        "--runroot",
        run_root,
    ]
    r = subprocess.run(
        [*store, "load", "-i", str(tmp_path / "a.tar")], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert f"Loaded image: {s.ref}" in r.stdout
    r = subprocess.run(
        [*store, "image", "inspect", s.ref], capture_output=True, text=True, timeout=60
    )
    shutil.rmtree(run_root, ignore_errors=True)
    assert json.loads(r.stdout)[0]["RootFS"]["Layers"] == [b.diff_id for b in s.built.layers]


def test_podman_socket_both_ways(occystrap_cli, sample_images, tmp_path):
    """Podman's Docker-compatible API (`podman system service`) as destination and source."""
    import shutil
    import tempfile
    import time

    if not shutil.which("podman"):
        pytest.skip("podman not installed (tools/setup.sh installs it)")
    run_root = tempfile.mkdtemp(prefix="pm-", dir="/tmp")  # podman wants it under 50 chars
    sock = f"{run_root}/api.sock"
    service = subprocess.Popen(
        [
            "podman",
            "--storage-driver",
            "vfs",
            "--root",
            str(tmp_path / "root"),
            "--runroot",
            run_root,
            "system",
            "service",
            "--time=0",
            f"unix://{sock}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not os.path.exists(sock):
            pytest.skip("podman system service did not start here")
        s = sample_images["docker"]
        ok(occystrap_cli("--insecure", "process", s.uri, f"docker://occy/pod:1?socket={sock}"))
        ok(
            occystrap_cli(
                "process", f"docker://occy/pod:1?socket={sock}", f"oci://{tmp_path / 'layout'}"
            )
        )
        r = subprocess.run(
            ["skopeo", "inspect", "--config", f"oci:{tmp_path / 'layout'}:1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(r.stdout)["rootfs"]["diff_ids"] == [b.diff_id for b in s.built.layers]
    finally:
        service.terminate()
        service.wait(20)
        shutil.rmtree(run_root, ignore_errors=True)


def test_filtered_image_loads_into_docker(occystrap_cli, docker_engine, sample_images, tmp_path):
    """A filtered image straight into the engine: its own loader accepts the rewritten
    layers and config (the diff_ids it computes match the config's)."""
    s = sample_images["docker"]
    ok(
        occystrap_cli(
            "--insecure",
            "process",
            s.uri,
            f"docker://occy/normalized:1?socket={docker_engine}",
            "-f",
            "normalize-timestamps:config=true",
            "-f",
            "exclude:pattern=var/cache",
        )
    )
    info = api(docker_engine, "/images/occy/normalized:1/json")
    assert info["Created"].startswith("1970-01-01T00:00:00")
    assert len(info["RootFS"]["Layers"]) == len(s.built.layers)
    assert info["RootFS"]["Layers"] != [b.diff_id for b in s.built.layers]
