"""Statistics end to end: schema 2 with queues, series, request counters and a verdict; the
summary line with retries; live progress only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys

from tests.conftest import REPO_ROOT, _clean_env
from tests.faultproxy import FaultProxy
from tools.imagebuilder import build_image, push_image


def test_stats_file_schema_2(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    path = tmp_path / "stats.json"
    r = occystrap_cli(
        "--insecure", "--stats-file", str(path), "process", s.uri, f"dir://{tmp_path / 'd'}"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(path.read_text())
    assert doc["schema"] == "occystrap.stats/2"
    total = sum(b.size for b in s.built.layers)
    assert [q["name"] for q in doc["queues"]] == [
        "resolve>fetch",
        "fetch>verify",
        "verify>compress",
        "compress>write",
    ]
    assert all(q["capacity"] == 64 and q["samples"] > 0 for q in doc["queues"])
    fetch = doc["stages"][1]
    assert fetch["requests"]["by_host"] == {s.host: len(s.built.layers)}
    assert 0 < fetch["busy_fraction"] <= 1
    assert fetch["io"]["write_chars"] >= total  # it wrote every layer to the spool
    assert doc["requests"]["total"] >= len(s.built.layers) + 2  # + manifest and config
    assert doc["transfer"]["bytes_received"] == total
    assert doc["bottleneck"]["reason"]
    series = doc["series"]
    assert series and series[-1]["pss_total"] > 0
    assert sum(row["stages"]["fetch"]["bytes"] for row in series) == total
    assert sum(row["stages"]["write"]["bytes"] for row in series) == total
    (image,) = doc["image_results"]
    assert image["result"] == "done" and image["bytes"] == total and image["seconds"] > 0
    assert r.stderr.splitlines()[-1].startswith(
        f"Summary: 1/1 images, {len(s.built.layers)} layers"
    )


def test_retries_and_skips_are_counted(occystrap_cli, registry, tmp_path):
    image = build_image(tmp_path / "build", seed=91, layer_sizes=[3 << 20], special_entries=False)
    push_image(registry.url, "stats/retry", "1", image)
    with FaultProxy(registry.port, cut_after=1 << 20, cuts=2) as proxy:
        path = tmp_path / "s.json"
        r = occystrap_cli(
            "--insecure",
            "--stats-file",
            str(path),
            "process",
            f"registry://{proxy.host}/stats/retry:1",
            f"registry://{registry.host}/stats/copy:1",
            env={"OCCYSTRAP_BACKOFF_SCALE": "0"},
        )
    assert r.returncode == 0, r.stderr
    doc = json.loads(path.read_text())
    assert doc["requests"]["retries"] >= 2
    assert doc["stages"][1]["requests"]["retries"] >= 2  # fetch's
    assert doc["transfer"]["bytes_sent"] >= image.layers[0].size
    summary = r.stderr.strip().splitlines()[-1]
    assert summary.startswith("Summary: 1/1 images") and "retries" in summary
    assert int(summary.rsplit(", ", 1)[1].split()[0]) >= 2
    # again: up to date, every byte avoided
    r = occystrap_cli(
        "--insecure",
        "--stats-file",
        str(path),
        "process",
        f"registry://{registry.host}/stats/retry:1",
        f"registry://{registry.host}/stats/copy:1",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(path.read_text())
    assert doc["images"]["up_to_date"] == 1
    assert doc["transfer"]["bytes_skipped"] == image.layers[0].size
    assert doc["transfer"]["bytes_received"] == 0


def test_not_a_tty_no_progress_quiet_nothing(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    r = occystrap_cli("--insecure", "process", s.uri, f"tar://{tmp_path / 'a.tar'}")
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stderr and "B/s" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("copied ") and lines[1].startswith("Summary:")
    r = occystrap_cli("--insecure", "-q", "process", s.uri, f"tar://{tmp_path / 'b.tar'}")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == ""


def test_progress_on_a_tty(registry, sample_images, tmp_path):
    s = sample_images["docker"]
    primary, secondary = pty.openpty()
    # A slow wire, so the copy lasts long enough for the display to redraw (a fast copy
    # can end before its first tick).
    wire = FaultProxy(registry.port, rate=2_000_000)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "occystrap",
            "--insecure",
            "-j",
            "1",
            "process",
            s.uri.replace(registry.host, wire.host),
            f"dir://{tmp_path / 'd'}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
        cwd=REPO_ROOT,
        env=_clean_env({"HOME": str(tmp_path)}),
    )
    os.close(secondary)
    seen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(60) == 0
    wire.close()
    os.close(primary)
    text = seen.decode()
    assert "Summary: 1/1 images" in text
    assert " images, " in text and "B/s" in text  # the overall progress line was drawn
