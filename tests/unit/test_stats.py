"""The statistics: the bottleneck verdict, queue occupancy, the series, the summary line,
the progress display and the registry request counters, without a pipeline."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from occystrap.channel import ChannelStatistics
from occystrap.cli import progress, report
from occystrap.messages import ImageDone, ImageFailed, Progress, StageReport
from occystrap.registry.client import RegistryClient
from occystrap.registry.counters import COUNTERS
from occystrap.stats import sampler as sampler_module
from occystrap.stats import schema
from occystrap.stats.sampler import MemorySampler, QueueStats, Sampler
from occystrap.stats.verdict import bottleneck


def _stage(
    name: str,
    busy: float,
    cpu: float = 0.0,
    wait_out: float = 0.0,
    wall: float = 10.0,
    requests: int = 0,
) -> dict[str, Any]:
    return {
        "stage": name,
        "busy_seconds": busy,
        "busy_fraction": busy / wall,
        "cpu_seconds": cpu,
        "wait_out_seconds": wait_out,
        "wall_seconds": wall,
        "requests": {"total": requests},
    }


def _queue(
    src: str, dst: str, mean: float = 0.0, full: float = 0.0, empty: float = 1.0
) -> dict[str, Any]:
    return {
        "name": f"{src}>{dst}",
        "from": src,
        "to": dst,
        "capacity": 64,
        "mean": mean,
        "full_fraction": full,
        "empty_fraction": empty,
    }


NAMES = ("resolve", "fetch", "verify", "compress", "write")


def _queues(**over: dict[str, float]) -> list[dict[str, Any]]:
    return [_queue(a, b, **over.get(a, {})) for a, b in zip(NAMES, NAMES[1:], strict=False)]


def test_busy_fetch_with_an_empty_output_queue_is_network_bound() -> None:
    stages = [
        _stage("resolve", 0.5, requests=3),
        _stage("fetch", 9.2, cpu=2.0, requests=40),
        _stage("verify", 0.1),
        _stage("compress", 0.2),
        _stage("write", 1.0),
    ]
    verdict = bottleneck(stages, _queues())
    assert verdict["stage"] == "fetch" and verdict["kind"] == "network-bound"
    assert verdict["reason"].startswith("fetch: 92% busy")
    assert "output queue mostly empty" in verdict["reason"]


def test_a_full_output_queue_blames_the_stage_downstream() -> None:
    stages = [
        _stage("resolve", 0.5),
        _stage("fetch", 9.5, cpu=1.0, wait_out=6.0, requests=9),
        _stage("verify", 0.1),
        _stage("compress", 3.0, cpu=2.9, wait_out=0.0),
        _stage("write", 0.5),
    ]
    queues = _queues(fetch={"mean": 60, "full": 0.7, "empty": 0.0})
    verdict = bottleneck(stages, queues)
    # fetch is blocked on verify; verify's output is not backed up, so verify is the limit
    assert verdict["stage"] == "verify"
    assert "fetch was blocked 60%" in verdict["reason"]


def test_blame_walks_down_a_chain_of_full_queues() -> None:
    stages = [
        _stage("resolve", 0.1),
        _stage("fetch", 9.0, wait_out=5.0, requests=1),
        _stage("verify", 8.0, wait_out=5.0),
        _stage("compress", 9.0, cpu=8.9),
        _stage("write", 0.5),
    ]
    queues = _queues(
        fetch={"mean": 64, "full": 0.9, "empty": 0.0},
        verify={"mean": 64, "full": 0.9, "empty": 0.0},
    )
    verdict = bottleneck(stages, queues)
    assert verdict["stage"] == "compress" and verdict["kind"] == "CPU-bound"


def test_nothing_busy_is_latency_bound() -> None:
    stages = [_stage(n, 0.5) for n in NAMES]
    verdict = bottleneck(stages, _queues())
    assert verdict["stage"] is None and verdict["kind"] == "latency-bound"


def test_local_fetch_is_disk_bound() -> None:
    stages = [_stage("resolve", 0.1), _stage("fetch", 8.0, cpu=1.0, requests=0)]
    assert bottleneck(stages, _queues())["kind"] == "disk-bound"


def test_queue_stats() -> None:
    q = QueueStats(4)
    for depth in (0, 0, 2, 4, 4):
        q.add(depth)
    d = q.to_dict()
    assert d == {
        "capacity": 4,
        "peak": 4,
        "mean": 2.0,
        "full_fraction": 0.4,
        "empty_fraction": 0.4,
        "samples": 5,
    }


class _FakeQueue:
    def __init__(self) -> None:
        self.depth = 0

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            capacity=64,
            depth=self.depth,
            sent=0,
            received=0,
            blocked_seconds=0.0,
            waiting_seconds=0.0,
            open_senders=1,
        )


def test_sampler_series_rows() -> None:
    moved = [0, 0, 0, 0, 0]
    q = _FakeQueue()
    sampler = Sampler({}, channels={"fetch>verify": q}, moved=moved, stages=NAMES, interval=1.0)
    q.depth = 7
    moved[1] = 5_000_000
    sampler.sample()
    sampler.row(sampler.started + 0.5)
    moved[1] = 6_000_000
    q.depth = 1
    sampler.sample()
    sampler.row(sampler.started + 1.0)
    first, second = sampler.series
    assert first["stages"]["fetch"]["bytes"] == 5_000_000
    assert first["stages"]["fetch"]["mb_s"] == pytest.approx(10.0, rel=0.01)
    assert first["queues"]["fetch>verify"] == 7
    assert second["stages"]["fetch"]["bytes"] == 1_000_000 and second["queues"]["fetch>verify"] == 1
    assert sampler.queue_stats["fetch>verify"].peak == 7


class _FakeProcess:
    """psutil.Process's two memory readings, counting the costly one (smaps_rollup)."""

    def __init__(self, rss: int, pss: int) -> None:
        self.rss, self.pss, self.full_reads = rss, pss, 0

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=self.rss)

    def memory_full_info(self) -> SimpleNamespace:
        self.full_reads += 1
        return SimpleNamespace(rss=self.rss, pss=self.pss)


def test_pss_is_read_again_only_when_rss_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    mib = 1 << 20
    clock = [100.0]
    monkeypatch.setattr(sampler_module.time, "monotonic", lambda: clock[0])
    proc = _FakeProcess(rss=10 * mib, pss=6 * mib)
    memory = MemorySampler({})
    memory._procs = {"fetch": proc}  # type: ignore[dict-item]
    memory.peaks = {"fetch": {"rss": 0, "pss": 0}}
    memory.sample()
    assert proc.full_reads == 1 and memory.peak_total == 6 * mib
    proc.rss += mib // 2  # new private pages: PSS moves with RSS, estimated without a read
    proc.pss += mib // 2
    memory.sample()
    assert proc.full_reads == 1 and memory.peak_total == 6 * mib + mib // 2
    proc.rss += mib  # past PSS_DRIFT since the reading: read again
    proc.pss += mib // 4  # (less than RSS: some of the new pages are shared)
    memory.sample()
    assert proc.full_reads == 2 and memory.last_total == 6 * mib + 3 * mib // 4
    proc.pss -= mib  # a sibling's exit changes sharing without any RSS change
    clock[0] += sampler_module.PSS_MAX_AGE
    memory.sample()
    assert proc.full_reads == 3 and memory.last_total == 5 * mib + 3 * mib // 4
    assert memory.peaks["fetch"] == {"rss": 11 * mib + mib // 2, "pss": 6 * mib + 3 * mib // 4}


def _result(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = dict(
        done=[],
        failed=[],
        reports={},
        memory={},
        peak_pss_total=0,
        wall_seconds=3.2,
        queues={},
        series=[],
        progress={},
        image_seconds={},
        sources=1,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def _done(i: int, size: int, layers: int, up_to_date: bool = False) -> ImageDone:
    return ImageDone(
        image_id=i,
        source=f"registry://h/i{i}:1",
        destination="tar:///x",
        manifest_digest="sha256:" + "0" * 64,
        layers=layers,
        bytes=size,
        skipped_layers=0,
        up_to_date=up_to_date,
    )


def test_summary_line_in_the_original_style() -> None:
    result = _result(
        done=[_done(1, 2_100_000_000, 10)],
        reports={
            "fetch": StageReport(stage="fetch", retries=2),
            "write": StageReport(stage="write", retries=1),
        },
    )
    assert report.summary_line(result) == "Summary: 1/1 images, 10 layers, 2.1 GB, 3.2 s, 3 retries"
    failed = ImageFailed(image_id=2, source="registry://h/x:1", stage="resolve", reason="404")
    result = _result(done=[_done(1, 0, 3, up_to_date=True)], failed=[failed])
    assert report.summary_line(result) == (
        "Summary: 1/2 images (1 already up to date), 3 layers, 0 B, 3.2 s, 0 retries, 1 failed"
    )


def test_to_dict_schema_2_aggregates_requests_and_skips() -> None:
    reports = {
        "resolve": StageReport(
            stage="resolve",
            wall_seconds=2.0,
            busy_seconds=0.2,
            requests={"r.example": 4},
            throttled=1,
            retries=1,
        ),
        "fetch": StageReport(
            stage="fetch",
            wall_seconds=2.0,
            busy_seconds=1.8,
            cpu_seconds=0.3,
            requests={"r.example": 10, "cdn.example": 10},
            bytes_received=5_000_000,
        ),
        "write": StageReport(
            stage="write", wall_seconds=2.0, layers_skipped=2, bytes_skipped=7_000
        ),
    }
    failed = ImageFailed(image_id=2, source="registry://h/x:1", stage="fetch", reason="boom")
    result = _result(
        done=[_done(1, 5_000_000, 3)],
        failed=[failed],
        reports=reports,
        image_seconds={1: 1.5, 2: 0.25},
        queues={"fetch>verify": QueueStats(64).to_dict()},
    )
    doc = schema.to_dict(result)
    assert doc["schema"] == "occystrap.stats/2"
    assert doc["requests"] == {
        "total": 24,
        "by_host": {"r.example": 14, "cdn.example": 10},
        "retries": 1,
        "throttled": 1,
        "pauses": 0,
        "paused_seconds": 0.0,
    }
    assert doc["transfer"]["bytes_received"] == 5_000_000
    assert doc["transfer"]["layers_skipped"] == 2 and doc["transfer"]["bytes_skipped"] == 7_000
    assert doc["queues"][0]["from"] == "fetch" and doc["queues"][0]["to"] == "verify"
    assert [(i["result"], i["seconds"]) for i in doc["image_results"]] == [
        ("done", 1.5),
        ("failed", 0.25),
    ]
    fetch = doc["stages"][1]
    assert fetch["busy_fraction"] == 0.9 and fetch["requests"]["total"] == 20
    assert doc["bottleneck"]["stage"] == "fetch"
    text = schema.to_text(result)
    assert "bottleneck: fetch: 90% busy" in text and "1 throttled (429)" in text
    assert "fetch>verify" in text and "registry://h/x:1" in text


def test_progress_display_draws_and_clears() -> None:
    out = io.StringIO()
    display = progress.ProgressDisplay(out, interval=0.0)
    result = _result(
        sources=2,
        progress={
            1: Progress(
                image_id=1,
                source="registry://h/a:1",
                done=10_000_000,
                total=40_000_000,
                layers_done=1,
                layers=4,
            ),
            2: Progress(
                image_id=2,
                source="registry://h/b:1",
                done=5_000_000,
                total=5_000_000,
                layers_done=2,
                layers=2,
            ),
        },
    )
    display.update(result)
    text = out.getvalue()
    assert "registry://h/a:1" in text and "25%" in text
    assert "registry://h/b:1" not in text  # finished fetching: only in the overall line
    assert "0/2 images, 15.0 MB / 45.0 MB" in text
    display.clear()
    assert out.getvalue().endswith("\x1b[2F\x1b[J")


@pytest.fixture
def throttling_registry() -> Iterator[str]:
    """A loopback server whose first answer is 429 (Retry-After: 0), then 200."""
    calls: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            calls.append(self.path)
            if len(calls) == 1:
                self.send_response(429)
                self.send_header("Retry-After", "0")
            else:
                self.send_response(200)
                self.send_header("Docker-Content-Digest", "sha256:" + "a" * 64)
                self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_request_counters(throttling_registry: str) -> None:
    COUNTERS.reset()
    with RegistryClient(throttling_registry, insecure=True, retries=2) as client:
        got = client.head_manifest("a/b", "1", ["application/vnd.oci.image.manifest.v1+json"])
    assert got is not None and got.digest == "sha256:" + "a" * 64
    snap = COUNTERS.snapshot()
    assert snap["requests"] == {throttling_registry: 2}
    assert snap["throttled"] == 1 and snap["retries"] == 1
    COUNTERS.reset()
    assert COUNTERS.snapshot()["requests"] == {}


def test_human_bytes() -> None:
    assert schema.human_bytes(999) == "999 B"
    assert schema.human_bytes(1_500) == "1.5 kB"
    assert schema.human_bytes(47_209_344) == "47.2 MB"
    assert schema.human_bytes(2_147_483_648) == "2.1 GB"


def test_stats_chart(tmp_path) -> None:
    from tools import stats_chart

    rows = [
        {
            "t": t,
            "seconds": 1.0,
            "pss_total": 1,
            "stages": {s: {"bytes": 1, "mb_s": t * 10.0} for s in stats_chart.STAGES},
            "queues": {},
        }
        for t in (1.0, 2.0, 3.0)
    ]
    src = tmp_path / "s.json"
    src.write_text(json.dumps({"schema": "occystrap.stats/2", "series": rows}))
    out = tmp_path / "c.png"
    assert stats_chart.main(["--plain", str(src), str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and out.stat().st_size > 100
    src.write_text(json.dumps({"schema": "occystrap.stats/1"}))
    assert stats_chart.main([str(src), str(out)]) == 1
