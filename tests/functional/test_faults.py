"""Faults from the machine and from the wire: a full disk, a stalled or failing registry.
Each run either completes with a verified output or fails with one line, exit 1, and leaves
nothing behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.faultproxy import FaultProxy
from tests.httpfaults import HTTPFaults, Rule
from tools.imagebuilder import BuiltImage


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few MiB (root can mount one here); skipped where mounting is refused."""
    mounts = []

    def make(size: str):
        path = tmp_path / f"disk-{len(mounts)}"
        path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
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
    r = occystrap_cli(
        "--insecure", "process", sample_images["docker"].uri, f"tar://{disk / 'a.tar'}"
    )
    assert r.returncode == 1
    line = one_error(r.stderr)
    assert "not enough free space" in line and str(disk) in line
    assert os.listdir(disk) == []


def test_disk_fills_up_mid_copy(occystrap_cli, sample_images, small_disk):
    """The compressed layers fit, their uncompressed copies (dir://) do not."""
    disk = small_disk("3m")
    r = occystrap_cli("--insecure", "process", sample_images["docker"].uri, f"dir://{disk / 'out'}")
    assert r.returncode == 1
    assert "No space left" in one_error(r.stderr)
    assert os.listdir(disk) == []


def test_stalled_registry_times_out(occystrap_cli, registry, sample_images, tmp_path):
    """A registry that stops sending mid-blob: the timeout fires, retries run out, clean exit."""
    with FaultProxy(registry.port, stall_after=200_000) as proxy:
        r = occystrap_cli(
            "--insecure",
            "--timeout",
            "1",
            "--retries",
            "1",
            "process",
            f"registry://{proxy.host}/library/app:1.0",
            f"tar://{tmp_path / 'a.tar'}",
            timeout=60,
        )
    assert r.returncode == 1
    assert proxy.host in one_error(r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["home"]


BLOB = r"/v2/.+/blobs/sha256:"
FAST = {"OCCYSTRAP_BACKOFF_SCALE": "0.01"}


def copy_through(occystrap_cli, faults, sample, tmp_path, *extra: str, env=None):
    return occystrap_cli(
        "--insecure",
        *extra,
        "process",
        f"registry://{faults.host}/{sample.name}:{sample.tag}",
        f"oci://{tmp_path / 'layout'}",
        env=env,
        timeout=120,
    )


def assert_exact(sample, tmp_path) -> None:
    for blob in sample.built.layers:
        with open(blob.path, "rb") as f:
            assert (
                tmp_path / "layout" / "blobs" / "sha256" / blob.digest[7:]
            ).read_bytes() == f.read()


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
def test_429_waits_for_retry_after(occystrap_cli, registry, sample_images, tmp_path, retry_after):
    s = sample_images["oci"]
    rule = Rule("GET", BLOB, "status", status=429, headers={"Retry-After": retry_after})
    with HTTPFaults(registry.port, [rule]) as faults:
        r = copy_through(
            occystrap_cli, faults, s, tmp_path, "--stats-file", str(tmp_path / "s.json"), env=FAST
        )
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


def test_persistent_503_gives_up_with_one_line(occystrap_cli, registry, sample_images, tmp_path):
    s = sample_images["oci"]
    rule = Rule("GET", r"/v2/.+/manifests/", "status", times=100, status=503)
    with HTTPFaults(registry.port, [rule]) as faults:
        r = copy_through(occystrap_cli, faults, s, tmp_path, "--retries", "2", env=FAST)
    assert r.returncode == 1
    assert "503" in one_error(r.stderr)
    assert sorted(os.listdir(tmp_path)) == ["home"]


def _gzip_bomb(tmp_path) -> BuiltImage:
    """One layer: a tar holding 512 MiB of zeros, about 0.5 MB once gzipped."""
    import gzip
    import hashlib
    import json
    import tarfile

    from tools.imagebuilder import Blob

    size = 512 * 2**20
    raw, packed = tmp_path / "bomb.tar", tmp_path / "bomb.tar.gz"
    with open(raw, "wb") as f, tarfile.open(fileobj=f, mode="w") as tf:
        info = tarfile.TarInfo("zeros")
        info.size = size

        class Zeros:
            left = size

            def read(self, n: int = -1) -> bytes:
                n = self.left if n < 0 else min(n, self.left)
                self.left -= n
                return bytes(n)

        tf.addfile(info, Zeros())
    diff = hashlib.sha256()
    with open(raw, "rb") as src, gzip.GzipFile(packed, "wb", compresslevel=1, mtime=0) as out:
        while chunk := src.read(1 << 22):
            diff.update(chunk)
            out.write(chunk)
    raw.unlink()
    data = packed.read_bytes()
    layer = Blob(
        "sha256:" + hashlib.sha256(data).hexdigest(),
        len(data),
        str(packed),
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "sha256:" + diff.hexdigest(),
    )
    config_bytes = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
    ).encode()
    (tmp_path / "config.json").write_bytes(config_bytes)
    config = Blob(
        "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
        len(config_bytes),
        str(tmp_path / "config.json"),
        "application/vnd.docker.container.image.v1+json",
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }
    ).encode()
    return BuiltImage(
        manifest,
        "application/vnd.docker.distribution.manifest.v2+json",
        "sha256:" + hashlib.sha256(manifest).hexdigest(),
        config,
        [layer],
    )


def test_gzip_bomb_is_streamed_not_swallowed(occystrap_cli, registry, small_disk, tmp_path):
    """A 0.5 MB layer that inflates to 512 MiB: decompression streams in bounded chunks, so
    memory stays flat; on a small disk the copy fails cleanly instead of filling it silently."""
    import json

    from tools.imagebuilder import push_image

    image = _gzip_bomb(tmp_path)
    push_image(registry.url, "hostile/bomb", "1.0", image)
    disk = small_disk("64m")
    stats = tmp_path / "stats.json"
    r = occystrap_cli(
        "--insecure",
        "--stats-file",
        str(stats),
        "process",
        f"registry://{registry.host}/hostile/bomb:1.0",
        f"dir://{disk / 'out'}",
        timeout=120,
    )
    assert r.returncode == 1
    assert "No space left" in one_error(r.stderr)
    assert os.listdir(disk) == []
    if stats.exists():
        assert json.loads(stats.read_text())["peak_pss_total"] < 150e6


def test_a_failure_in_write_stops_the_downloads_of_that_image(occystrap_cli, registry, tmp_path):
    """The destination refuses every upload (its config's goes first), so write fails the
    image as soon as the refusal comes back (Writer.failed_early): fetch hears of it
    (stages/failures.py) and starts none of the image's other downloads. Six 200 kB layers
    come one at a time (-j 1) at 200 kB/s; without the side channel all six would be
    fetched. The failure is counted by its kind in the statistics."""
    import json

    from tools.imagebuilder import build_image, push_image

    image = build_image(
        tmp_path / "build", seed=4711, layer_sizes=[200_000] * 6, special_entries=False
    )
    push_image(registry.url, "upstream/stop", "1", image)
    refuse = Rule("POST", r"/v2/.+/blobs/uploads/", "status", times=1000, status=403)
    stats = tmp_path / "s.json"
    with FaultProxy(registry.port, rate=200_000) as src, HTTPFaults(registry.port, [refuse]) as dst:
        r = occystrap_cli(
            "--insecure",
            "-j",
            "1",
            "--stats-file",
            str(stats),
            "process",
            f"registry://{src.host}/upstream/stop:1",
            f"registry://{dst.host}/copy/stop:1",
            env=FAST,
            timeout=120,
        )
        fetched = [
            line
            for line in src.request_lines
            if line.startswith("GET") and any(la.digest in line for la in image.layers)
        ]
    assert r.returncode == 1
    assert "upstream/stop:1" in one_error(r.stderr) and refuse.fired >= 1
    assert 1 <= len(fetched) <= 3, fetched
    doc = json.loads(stats.read_text())
    (failed,) = doc["image_results"]
    assert failed["result"] == "failed" and failed["stage"] == "write"
    assert doc["images"]["failed_by_kind"] == {failed["kind"]: 1}
    assert failed["kind"].endswith("Error") and failed["kind"] != "OccystrapError"
