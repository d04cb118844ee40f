"""Interrupts, dead stages and broken connections, against the real registry behind a proxy
that degrades the wire (tests/faultproxy.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import _clean_env, _cli_command
from tests.faultproxy import FaultProxy
from tools.imagebuilder import build_image, push_image

STAGES_AFTER_RESOLVE = 4  # resolve exits once it has planned every image
RATE = 300_000  # bytes/s per connection: a layer takes 5 s


@pytest.fixture(scope="module")
def slow_image(registry, tmp_path_factory):
    """A 6 MB image: long enough to interrupt when served at 1 MB/s."""
    image = build_image(
        tmp_path_factory.mktemp("slow"),
        seed=321,
        layer_sizes=[1_500_000] * 4,
        special_entries=False,
    )
    push_image(registry.url, "slow/app", "1.0", image)
    return image


def start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    return subprocess.Popen(
        [*_cli_command(), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_clean_env({"HOME": str(home)}),
    )


def wait_for_stages(proc: subprocess.Popen[bytes], spool_parent: Path) -> list[psutil.Process]:
    """Wait until all stages run and temp files (spool or tarball) hold some bytes; return
    the stage processes."""
    deadline = time.monotonic() + 20
    parent = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        children = parent.children()
        spooled = (
            sum(
                f.stat().st_size
                for f in spool_parent.rglob("*")
                if ".occystrap-" in str(f) and f.is_file()
            )
            > 100_000
        )
        if len(children) >= STAGES_AFTER_RESOLVE and spooled:
            return children
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the copy never got going")


def assert_gone(children: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"stage processes left behind: {alive}"


@pytest.mark.parametrize(
    "dest, signum, code, word",
    [
        ("tar://out/app.tar", signal.SIGINT, 130, b"interrupted"),
        ("oci://out/layout", signal.SIGINT, 130, b"interrupted"),
        ("dir://out/dir", signal.SIGINT, 130, b"interrupted"),
        ("tar://out/app.tar", signal.SIGTERM, 143, b"terminated"),
    ],
)
def test_ctrl_c_stops_everything_and_cleans_up(
    registry, slow_image, tmp_path, dest, signum, code, word
):
    (tmp_path / "out").mkdir()
    with FaultProxy(registry.port, rate=RATE) as proxy:
        proc = start(
            ["--insecure", "process", f"registry://{proxy.host}/slow/app:1.0", dest], tmp_path
        )
        children = wait_for_stages(proc, tmp_path / "out")
        t0 = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=15)
        elapsed = time.monotonic() - t0
    assert proc.returncode == code, err.decode()
    assert elapsed < 5, f"took {elapsed:.1f} s to stop"
    assert word in err and b"Traceback" not in err
    assert_gone(children)
    assert os.listdir(tmp_path / "out") == []


def test_dead_stage_is_reported_and_cleaned_up(registry, slow_image, tmp_path):
    (tmp_path / "out").mkdir()
    with FaultProxy(registry.port, rate=RATE) as proxy:
        proc = start(
            ["--insecure", "process", f"registry://{proxy.host}/slow/app:1.0", "tar://out/app.tar"],
            tmp_path,
        )
        children = wait_for_stages(proc, tmp_path / "out")
        fetch = max(children, key=lambda c: c.num_threads())  # its download pool
        fetch.kill()  # the fetch stage, mid-download
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert b"fetch stage died" in err, err.decode()
    assert_gone(children)
    assert os.listdir(tmp_path / "out") == []
    # and a re-run completes
    rerun = subprocess.run(
        [
            *_cli_command(),
            "--insecure",
            "process",
            f"registry://{registry.host}/slow/app:1.0",
            "tar://out/app.tar",
        ],
        cwd=tmp_path,
        env=_clean_env({"HOME": str(tmp_path / "home")}),
        capture_output=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert os.listdir(tmp_path / "out") == ["app.tar"]


def test_broken_download_resumes(occystrap_cli, registry, slow_image, tmp_path):
    """A connection cut mid-blob: the copy still succeeds and the output is exact."""
    with FaultProxy(registry.port, cut_after=700_000, cuts=2) as proxy:
        r = occystrap_cli(
            "--insecure",
            "process",
            f"registry://{proxy.host}/slow/app:1.0",
            f"oci://{tmp_path / 'layout'}",
            env={"OCCYSTRAP_BACKOFF_SCALE": "0.01"},
        )
        assert proxy.cuts_done == 2
    assert r.returncode == 0, r.stderr
    for blob in slow_image.layers:
        with open(blob.path, "rb") as f:
            assert (
                tmp_path / "layout" / "blobs" / "sha256" / blob.digest[7:]
            ).read_bytes() == f.read()
