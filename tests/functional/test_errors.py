"""Bad input gets one clear line, the right exit code, and leaves nothing that looks complete."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.conftest import TEST_PASSWORD, TEST_USER
from tools.imagebuilder import build_image, push_image


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("occystrap: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def assert_nothing_left(directory: Path) -> None:
    assert sorted(os.listdir(directory)) == ["home"], os.listdir(directory)


@pytest.mark.parametrize(
    "source, dest, fragment",
    [
        ("ftp://x/y", "tar://a.tar", "unknown source"),
        ("registry://127.0.0.1:1/Bad_Name:1", "tar://a.tar", "invalid repository name"),
        ("registry://127.0.0.1:1/app@sha256:abc", "tar://a.tar", "invalid digest"),
        ("registry://127.0.0.1:1/app:1", "/tmp/plain/path", "not a URI"),
        ("registry://127.0.0.1:1/app:1", "s3://bucket/x", "unknown destination"),
    ],
)
def test_usage_errors_exit_2(occystrap_cli, tmp_path, source, dest, fragment):
    r = occystrap_cli("process", source, dest)
    assert r.returncode == 2
    assert fragment in one_error_line(r.stderr)
    assert_nothing_left(tmp_path)


def test_bad_platform_flag(occystrap_cli, tmp_path):
    r = occystrap_cli("--platform", "linux", "process", "registry://h.io/a:1", "tar://a.tar")
    assert r.returncode == 2
    assert "invalid platform" in one_error_line(r.stderr)


def test_missing_tag(occystrap_cli, registry, sample_images, tmp_path):
    uri = f"registry://{registry.host}/library/app:does-not-exist"
    r = occystrap_cli("--insecure", "process", uri, f"tar://{tmp_path / 'a.tar'}")
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "not found" in line and "does-not-exist" in line
    assert_nothing_left(tmp_path)


def test_missing_digest(occystrap_cli, registry, sample_images, tmp_path):
    uri = f"registry://{registry.host}/library/app@sha256:{'0' * 64}"
    r = occystrap_cli("--insecure", "process", uri, f"dir://{tmp_path / 'out'}")
    assert r.returncode == 1
    assert "not found" in one_error_line(r.stderr)
    assert_nothing_left(tmp_path)


def test_unreachable_registry(occystrap_cli, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = occystrap_cli(
        "--insecure",
        "--retries",
        "0",
        "process",
        f"registry://127.0.0.1:{port}/app:1",
        f"tar://{tmp_path / 'a.tar'}",
    )
    assert r.returncode == 1
    assert f"127.0.0.1:{port}" in one_error_line(r.stderr)
    assert_nothing_left(tmp_path)


def test_unwritable_destination(occystrap_cli, sample_images, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = occystrap_cli(
        "--insecure", "process", sample_images["docker"].uri, f"tar://{blocker / 'a.tar'}"
    )
    assert r.returncode == 1
    assert str(blocker) in one_error_line(r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["file", "home"]


def _registry_blob(registry, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return (
        Path(registry.dir)
        / "data"
        / "docker"
        / "registry"
        / "v2"
        / "blobs"
        / "sha256"
        / hexd[:2]
        / hexd
        / "data"
    )


def test_corrupt_blob_in_registry(occystrap_cli, registry, tmp_path):
    """The registry serves a layer whose bytes no longer match its digest."""
    image = build_image(
        tmp_path / "build", seed=901, layer_sizes=[200_000, 300_000], special_entries=False
    )
    push_image(registry.url, "corrupt/app", "1.0", image)
    blob = _registry_blob(registry, image.layers[1].digest)
    assert blob.exists(), f"registry storage layout changed: {blob}"
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    for dest in ("tar://out.tar", "oci://layout", "dir://dir"):
        r = occystrap_cli(
            "--insecure", "process", f"registry://{registry.host}/corrupt/app:1.0", dest
        )
        assert r.returncode == 1, r.stderr
        line = one_error_line(r.stderr)
        assert image.layers[1].digest in line
        assert sorted(os.listdir(tmp_path)) == ["build", "home"], (dest, os.listdir(tmp_path))


def test_basic_auth(occystrap_cli, auth_registry, tmp_path):
    image = build_image(tmp_path / "build", seed=5, layer_sizes=[50_000], special_entries=False)
    push_image(auth_registry.url, "private/app", "1.0", image, auth=(TEST_USER, TEST_PASSWORD))
    uri = f"registry://{auth_registry.host}/private/app:1.0"

    r = occystrap_cli("--insecure", "process", uri, f"tar://{tmp_path / 'anon.tar'}")
    assert r.returncode == 1
    assert "auth" in one_error_line(r.stderr).lower()

    r = occystrap_cli(
        "--insecure",
        "--username",
        TEST_USER,
        "--password",
        "wrong-pw-123",
        "process",
        uri,
        f"tar://{tmp_path / 'bad.tar'}",
    )
    assert r.returncode == 1
    assert "wrong-pw-123" not in r.stderr
    one_error_line(r.stderr)

    r = occystrap_cli(
        "--insecure",
        "process",
        uri,
        f"tar://{tmp_path / 'env.tar'}",
        env={"OCCYSTRAP_USERNAME": TEST_USER, "OCCYSTRAP_PASSWORD": TEST_PASSWORD},
    )
    assert r.returncode == 0, r.stderr
    assert TEST_PASSWORD not in r.stderr + r.stdout


def test_docker_config_credentials(occystrap_cli, auth_registry, tmp_path):
    import base64
    import json

    image = build_image(tmp_path / "build", seed=6, layer_sizes=[50_000], special_entries=False)
    push_image(auth_registry.url, "private/cfg", "1.0", image, auth=(TEST_USER, TEST_PASSWORD))
    cfg_dir = tmp_path / "dockercfg"
    cfg_dir.mkdir()
    token = base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode()
    (cfg_dir / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": token}}})
    )
    r = occystrap_cli(
        "--insecure",
        "process",
        f"registry://{auth_registry.host}/private/cfg:1.0",
        f"oci://{tmp_path / 'layout'}",
        env={"DOCKER_CONFIG": str(cfg_dir)},
    )
    assert r.returncode == 0, r.stderr


def test_credentials_never_appear_in_any_output(occystrap_cli, auth_registry, tmp_path):
    """Everything a run prints or writes, --verbose and statistics included, is grepped for
    the password and for the Basic header built from it."""
    import base64

    image = build_image(tmp_path / "build", seed=8, layer_sizes=[40_000], special_entries=False)
    push_image(auth_registry.url, "private/grep", "1.0", image, auth=(TEST_USER, TEST_PASSWORD))
    stats = tmp_path / "stats.json"
    uri = f"registry://{auth_registry.host}/private/grep:1.0"
    basic = base64.b64encode(f"{TEST_USER}:{TEST_PASSWORD}".encode()).decode()
    for password in (TEST_PASSWORD, "not-the-password-42"):
        r = occystrap_cli(
            "--insecure",
            "--verbose",
            "--stats",
            "text",
            "--stats-file",
            str(stats),
            "--username",
            TEST_USER,
            "--password",
            password,
            "process",
            uri,
            f"oci://{tmp_path / 'layout'}",
        )
        written = r.stdout + r.stderr + (stats.read_text() if stats.exists() else "")
        for secret in (password, basic):
            assert secret not in written
    # Secrets the user typed into URIs: a query option and URL userinfo, in every output
    # that names a URI (result and failure lines, summaries, --stats json and --stats-file,
    # --verbose, info and check, usage errors).
    layout = tmp_path / "layout2"
    runs = [
        (
            "--insecure",
            "--verbose",
            "--stats",
            "json",
            "--stats-file",
            str(stats),
            "--username",
            TEST_USER,
            "--password",
            TEST_PASSWORD,
            "process",
            f"{uri}?token=uri-s3cret-1",
            f"oci://{layout}?token=uri-s3cret-2",
        ),
        (
            "--insecure",
            "--verbose",
            "--stats",
            "json",
            "process",
            f"registry://{auth_registry.host}/private/missing:1.0?token=uri-s3cret-3",
            f"dir://{tmp_path / 'out'}?sig=uri-s3cret-4",
        ),
        (
            "--insecure",
            "--username",
            TEST_USER,
            "--password",
            TEST_PASSWORD,
            "info",
            "-O",
            "json",
            f"{uri}?token=uri-s3cret-5",
        ),
        (
            "--insecure",
            "--username",
            TEST_USER,
            "--password",
            TEST_PASSWORD,
            "check",
            "-O",
            "json",
            f"{uri}?token=uri-s3cret-6",
        ),
        (
            "--insecure",
            "process",
            f"registry://u:uri-s3cret-7@{auth_registry.host}/p/g:1",
            "tar://x.tar",
        ),
        (
            "--insecure",
            "process",
            f"registry://u:uri-s3cret-8@{auth_registry.host}/p/*:1",
            "oci://x",
        ),
        (
            "--quay-url",
            "http://u:uri-s3cret-9@127.0.0.1:1",
            "--retries",
            "0",
            "process",
            "quay://ns/app*:1?token=uri-s3cret-10",
            f"oci://{tmp_path / 'q'}",
        ),
    ]
    for args in runs:
        if stats.exists():
            stats.unlink()
        r = occystrap_cli(*args)
        written = r.stdout + r.stderr + (stats.read_text() if stats.exists() else "")
        assert "uri-s3cret" not in written, (args, written)
        assert TEST_PASSWORD not in written
        assert "Traceback" not in written
    assert "REDACTED" in r.stderr  # the last one failed, naming its (redacted) source


def test_tls_to_a_plain_http_registry_says_insecure(occystrap_cli, registry):
    """Forgetting --insecure with a local plain-HTTP registry: one line that names the
    flag, at once (a TLS hello answered in plain HTTP is not worth retrying)."""
    import time

    started = time.monotonic()
    r = occystrap_cli("info", f"registry://{registry.host}/nothing/here:1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "does not speak TLS" in r.stderr and "--insecure" in r.stderr
    assert time.monotonic() - started < 5
