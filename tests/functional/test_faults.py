"""Faults from the machine and from the wire: a full disk, a stalled or failing registry.
Each run either completes with a verified output or fails with one line, exit 1, and leaves
nothing behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.faultproxy import FaultProxy
from tests.httpfaults import HTTPFaults, Rule


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few MiB (root can mount one here); skipped where mounting is refused."""
    mounts = []

    def make(size: str):
        path = tmp_path / f"disk-{len(mounts)}"
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


def one_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("occystrap: error:")]
    assert lines and "Traceback" not in stderr, stderr
    return lines[0]


def test_full_disk_found_before_the_copy(occystrap_cli, sample_images, small_disk):
    disk = small_disk("1m")
    r = occystrap_cli("--insecure", "process", sample_images["docker"].uri,
                      f"tar://{disk / 'a.tar'}")
    assert r.returncode == 1
    line = one_error(r.stderr)
    assert "not enough free space" in line and str(disk) in line
    assert os.listdir(disk) == []


def test_disk_fills_up_mid_copy(occystrap_cli, sample_images, small_disk):
    """The compressed layers fit, their uncompressed copies (dir://) do not."""
    disk = small_disk("3m")
    r = occystrap_cli("--insecure", "process", sample_images["docker"].uri,
                      f"dir://{disk / 'out'}")
    assert r.returncode == 1
    assert "No space left" in one_error(r.stderr)
    assert os.listdir(disk) == []


def test_stalled_registry_times_out(occystrap_cli, registry, sample_images, tmp_path):
    """A registry that stops sending mid-blob: the timeout fires, retries run out, clean exit."""
    with FaultProxy(registry.port, stall_after=200_000) as proxy:
        r = occystrap_cli("--insecure", "--timeout", "1", "--retries", "1", "process",
                          f"registry://{proxy.host}/library/app:1.0",
                          f"tar://{tmp_path / 'a.tar'}", timeout=60)
    assert r.returncode == 1
    assert proxy.host in one_error(r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["home"]


BLOB = r"/v2/.+/blobs/sha256:"
FAST = {"OCCYSTRAP_BACKOFF_SCALE": "0.01"}


def copy_through(occystrap_cli, faults, sample, tmp_path, *extra: str, env=None):
    return occystrap_cli("--insecure", *extra, "process",
                         f"registry://{faults.host}/{sample.name}:{sample.tag}",
                         f"oci://{tmp_path / 'layout'}", env=env, timeout=120)


def assert_exact(sample, tmp_path) -> None:
    for blob in sample.built.layers:
        with open(blob.path, "rb") as f:
            assert (tmp_path / "layout" / "blobs" / "sha256" / blob.digest[7:]).read_bytes() \
                == f.read()


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(occystrap_cli, registry, sample_images, tmp_path, status):
    s = sample_images["oci"]
    rule = Rule("GET", BLOB, "status", times=2, status=status)
    with HTTPFaults(registry.port, [rule]) as faults:
        r = copy_through(occystrap_cli, faults, s, tmp_path, env=FAST)
    assert r.returncode == 0, r.stderr
    assert rule.fired == 2 and "2 retries" in r.stderr
    assert_exact(s, tmp_path)


@pytest.mark.parametrize("retry_after", ["1", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_429_waits_for_retry_after(occystrap_cli, registry, sample_images, tmp_path,
                                   retry_after):
    s = sample_images["oci"]
    rule = Rule("GET", BLOB, "status", status=429, headers={"Retry-After": retry_after})
    with HTTPFaults(registry.port, [rule]) as faults:
        r = copy_through(occystrap_cli, faults, s, tmp_path, "--stats-file",
                         str(tmp_path / "s.json"), env=FAST)
    assert r.returncode == 0, r.stderr
    assert rule.fired == 1
    assert_exact(s, tmp_path)


def test_truncated_body_is_resumed(occystrap_cli, registry, sample_images, tmp_path):
    s = sample_images["oci"]
    rule = Rule("GET", BLOB, "truncate", times=2)
    with HTTPFaults(registry.port, [rule]) as faults:
        r = copy_through(occystrap_cli, faults, s, tmp_path, env=FAST)
    assert r.returncode == 0, r.stderr
    assert_exact(s, tmp_path)


def test_wrong_bytes_fail_cleanly(occystrap_cli, registry, sample_images, tmp_path):
    s = sample_images["oci"]
    rule = Rule("GET", BLOB, "wrong_bytes", times=100)
    with HTTPFaults(registry.port, [rule]) as faults:
        r = copy_through(occystrap_cli, faults, s, tmp_path, env=FAST)
    assert r.returncode == 1
    assert "sha256:" in one_error(r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["home"]


def test_persistent_503_gives_up_with_one_line(occystrap_cli, registry, sample_images,
                                               tmp_path):
    s = sample_images["oci"]
    rule = Rule("GET", r"/v2/.+/manifests/", "status", times=100, status=503)
    with HTTPFaults(registry.port, [rule]) as faults:
        r = copy_through(occystrap_cli, faults, s, tmp_path, "--retries", "2", env=FAST)
    assert r.returncode == 1
    assert "503" in one_error(r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["home"]
