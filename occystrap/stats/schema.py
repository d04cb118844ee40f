"""The `occystrap.stats/2` document (docs/stats.md): its shape as msgspec Structs, built from
a RunResult; `to_json` for --stats json and --stats-file, `to_text` for --stats text.

Memory and I/O figures are bytes, times seconds. The schema name changes when a field changes
meaning or goes; new fields may be added within a version. A field that is `UNSET` is left
out of the document (a stage that never reported has only its memory peaks).
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from occystrap.messages import STAGES, StageReport
from occystrap.stats.imagetable import image_lines
from occystrap.stats.verdict import bottleneck

SCHEMA = "occystrap.stats/2"
REQUEST_KEYS = (
    "retries",
    "throttled",
    "bytes_received",
    "bytes_sent",
    "mounts",
    "pauses",
    "paused_seconds",
)
_EMPTY_MEM = {"rss": 0, "pss": 0}


class Shard(msgspec.Struct):
    index: int
    count: int


class RunInfo(msgspec.Struct):
    """Which run wrote the document, for `occystrap report merge`."""

    shard: Shard | None
    hostname: str
    version: str
    started_at: str  # UTC, ISO 8601, whole seconds, with a Z
    finished_at: str


class ImageCounts(msgspec.Struct):
    done: int
    failed: int
    up_to_date: int
    failed_by_kind: dict[str, int]  # the error's class name → images failed with it


class DoneImage(msgspec.Struct):
    source: str
    destination: str
    result: str  # "done" or "up_to_date"
    seconds: float
    bytes: int
    layers: int
    skipped_layers: int
    manifest_digest: str
    detail: str


class FailedImage(msgspec.Struct):
    source: str
    result: str  # "failed"
    stage: str
    reason: str
    kind: str
    seconds: float


class StageIO(msgspec.Struct):
    """/proc/PID/io: *_bytes reached the block layer, *_chars every read/write call."""

    read_bytes: int
    write_bytes: int
    read_chars: int
    write_chars: int


class StageRequests(msgspec.Struct):
    total: int
    by_host: dict[str, int]
    retries: int
    throttled: int
    bytes_received: int
    bytes_sent: int
    mounts: int
    pauses: int
    paused_seconds: float


class StageEntry(msgspec.Struct):
    """One stage; everything after the memory peaks is from its report (UNSET without)."""

    stage: str
    peak_rss: int
    peak_pss: int
    items_in: int | UnsetType = UNSET
    items_out: int | UnsetType = UNSET
    bytes_in: int | UnsetType = UNSET
    bytes_out: int | UnsetType = UNSET
    busy_seconds: float | UnsetType = UNSET
    wait_in_seconds: float | UnsetType = UNSET
    wait_out_seconds: float | UnsetType = UNSET
    cpu_seconds: float | UnsetType = UNSET
    wall_seconds: float | UnsetType = UNSET
    busy_fraction: float | UnsetType = UNSET  # of the longest stage's wall time
    io: StageIO | UnsetType = UNSET
    requests: StageRequests | UnsetType = UNSET
    layers_skipped: int | UnsetType = UNSET
    bytes_skipped: int | UnsetType = UNSET


class QueueEntry(msgspec.Struct, rename={"from_": "from"}):
    """One channel: occupancy sampled by the supervisor, totals from its statistics."""

    name: str
    from_: str
    to: str
    capacity: int
    peak: int
    mean: float
    full_fraction: float
    empty_fraction: float
    samples: int
    messages: int | UnsetType = UNSET
    blocked_seconds: float | UnsetType = UNSET  # its sender's time blocked on it
    waiting_seconds: float | UnsetType = UNSET  # its receiver's time waiting on it


class Requests(msgspec.Struct):
    total: int
    by_host: dict[str, int]
    retries: int
    throttled: int
    pauses: int
    paused_seconds: float


class Transfer(msgspec.Struct):
    bytes_received: int
    bytes_sent: int
    mounts: int
    layers_skipped: int
    bytes_skipped: int


class Document(msgspec.Struct):
    schema: str
    run: RunInfo
    wall_seconds: float
    bytes: int
    throughput_mb_s: float
    peak_pss_total: int
    supervisor: dict[str, int]
    images: ImageCounts
    image_results: list[DoneImage | FailedImage]
    stages: list[StageEntry]
    queues: list[QueueEntry]
    requests: Requests
    transfer: Transfer
    bottleneck: dict[str, Any]  # stats/verdict.py
    series: list[dict[str, Any]]  # stats/sampler.py: one row a second


def run_info(shard: tuple[int, int] | None, wall_seconds: float) -> RunInfo:
    """Which run wrote a stats document: the --shard (index and count, or None), the host (a
    pod's name under Kubernetes), the occystrap version, and when it started and finished
    (UTC, ISO 8601, whole seconds; started = finished - wall)."""
    from occystrap import __version__

    finished = datetime.now(UTC).replace(microsecond=0)
    started = finished - timedelta(seconds=round(wall_seconds))
    return RunInfo(
        shard=Shard(shard[0], shard[1]) if shard else None,
        hostname=socket.gethostname(),
        version=__version__,
        started_at=started.isoformat().replace("+00:00", "Z"),
        finished_at=finished.isoformat().replace("+00:00", "Z"),
    )


def _stage_entry(
    name: str, report: StageReport | None, mem: dict[str, int], span: float
) -> StageEntry:
    """`span`: the longest stage's wall time. Busy shares are of that, not of the stage's own
    life, so resolve finishing early and idle is not mistaken for resolve being busy."""
    entry = StageEntry(stage=name, peak_rss=mem["rss"], peak_pss=mem["pss"])
    if report is None:
        return entry
    r = report
    return msgspec.structs.replace(
        entry,
        items_in=r.items_in,
        items_out=r.items_out,
        bytes_in=r.bytes_in,
        bytes_out=r.bytes_out,
        busy_seconds=round(r.busy_seconds, 3),
        wait_in_seconds=round(r.wait_in_seconds, 3),
        wait_out_seconds=round(r.wait_out_seconds, 3),
        cpu_seconds=round(r.cpu_seconds, 3),
        wall_seconds=round(r.wall_seconds, 3),
        busy_fraction=round(min(r.busy_seconds / span, 1.0), 3) if span > 0 else 0.0,
        io=StageIO(r.io_read_bytes, r.io_write_bytes, r.io_read_chars, r.io_write_chars),
        requests=StageRequests(
            sum(r.requests.values()), dict(r.requests), *(getattr(r, k) for k in REQUEST_KEYS)
        ),
        layers_skipped=r.layers_skipped,
        bytes_skipped=r.bytes_skipped,
    )


def _image_entries(result: Any) -> list[DoneImage | FailedImage]:
    seconds = getattr(result, "image_seconds", {})
    images: list[DoneImage | FailedImage] = [
        DoneImage(
            d.source,
            d.destination,
            "up_to_date" if d.up_to_date else "done",
            round(seconds.get(d.image_id, 0.0), 3),
            d.bytes,
            d.layers,
            d.skipped_layers,
            d.manifest_digest,
            d.detail,
        )
        for d in result.done
    ]
    images += [
        FailedImage(
            f.source, "failed", f.stage, f.reason, f.kind, round(seconds.get(f.image_id, 0.0), 3)
        )
        for f in result.failed
    ]
    return images


def build(result: Any, shard: tuple[int, int] | None = None) -> Document:
    """The document of a run (an `outcome.RunResult`, or anything with its fields)."""
    span = max((r.wall_seconds for r in result.reports.values()), default=0.0)
    stages = [
        _stage_entry(name, result.reports.get(name), result.memory.get(name, _EMPTY_MEM), span)
        for name in STAGES
    ]
    queues = []
    for name, q in getattr(result, "queues", {}).items():
        src, _, dst = name.partition(">")
        queues.append(QueueEntry(name=name, from_=src, to=dst, **q))
    by_host: Counter[str] = Counter()
    totals: dict[str, float] = dict.fromkeys(REQUEST_KEYS, 0)
    for st in stages:
        if isinstance(st.requests, StageRequests):
            by_host.update(st.requests.by_host)
            for k in REQUEST_KEYS:
                totals[k] += getattr(st.requests, k)
    write = stages[-1]  # the end of the line sees every skipped layer once
    moved = sum(d.bytes for d in result.done)
    kinds = Counter(f.kind for f in result.failed)
    builtins = msgspec.to_builtins
    return Document(
        schema=SCHEMA,
        run=run_info(shard, result.wall_seconds),
        wall_seconds=round(result.wall_seconds, 3),
        bytes=moved,
        throughput_mb_s=round(moved / 1e6 / result.wall_seconds, 1) if result.wall_seconds else 0.0,
        peak_pss_total=result.peak_pss_total,
        supervisor=result.memory.get("supervisor", _EMPTY_MEM),
        images=ImageCounts(
            done=len(result.done),
            failed=len(result.failed),
            up_to_date=sum(1 for d in result.done if d.up_to_date),
            failed_by_kind=dict(sorted(kinds.items())),
        ),
        image_results=_image_entries(result),
        stages=stages,
        queues=queues,
        requests=Requests(
            total=sum(by_host.values()),
            by_host=dict(by_host),
            retries=int(totals["retries"]),
            throttled=int(totals["throttled"]),
            pauses=int(totals["pauses"]),
            paused_seconds=round(totals["paused_seconds"], 3),
        ),
        transfer=Transfer(
            bytes_received=int(totals["bytes_received"]),
            bytes_sent=int(totals["bytes_sent"]),
            mounts=int(totals["mounts"]),
            layers_skipped=write.layers_skipped or 0,
            bytes_skipped=write.bytes_skipped or 0,
        ),
        bottleneck=bottleneck(builtins(stages), builtins(queues)),
        series=list(getattr(result, "series", [])),
    )


def to_dict(result: Any, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """The `occystrap.stats/2` document of a run, as JSON-ready builtins; `shard` is the
    run's --shard K/N."""
    doc: dict[str, Any] = msgspec.to_builtins(build(result, shard))
    return doc


def to_json(result: Any, shard: tuple[int, int] | None = None) -> str:
    return json.dumps(to_dict(result, shard), indent=2)


# -- text ----------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def human_bytes(n: float) -> str:
    """Decimal units, as the summary line of the original occystrap."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def to_text(result: Any) -> str:
    """The --stats text report (docs/stats.md): the same figures as the document."""
    data = to_dict(result)
    lines = [
        f"{'stage':<9} {'items':>6} {'MB in':>9} {'MB out':>9} {'busy s':>7} "
        f"{'wait-in':>7} {'blocked':>7} {'cpu s':>6} {'MB/s':>7} {'peak MB':>8}",
    ]
    for s in data["stages"]:
        busy = s.get("busy_seconds", 0.0)
        moved = max(s.get("bytes_in", 0), s.get("bytes_out", 0))
        # A rate over a few milliseconds of work says nothing: leave it out.
        rate = f"{moved / 1e6 / busy:.1f}" if busy >= 0.05 else "-"
        lines.append(
            f"{s['stage']:<9} {s.get('items_in', 0):>6} {_mb(s.get('bytes_in', 0)):>9} "
            f"{_mb(s.get('bytes_out', 0)):>9} {busy:>7.2f} {s.get('wait_in_seconds', 0):>7.2f} "
            f"{s.get('wait_out_seconds', 0):>7.2f} {s.get('cpu_seconds', 0):>6.2f} "
            f"{rate:>7} {_mb(s['peak_pss']):>8}"
        )
    lines.append("")
    lines.append(
        f"{'stage':<9} {'busy%':>6} {'disk rd MB':>10} {'disk wr MB':>10} "
        f"{'file rd MB':>10} {'file wr MB':>10} {'requests':>8} {'retries':>7} "
        f"{'429s':>5}"
    )
    for s in data["stages"]:
        io = s.get("io", {})
        req = s.get("requests", {})
        lines.append(
            f"{s['stage']:<9} {s.get('busy_fraction', 0) * 100:>5.0f}% "
            f"{_mb(io.get('read_bytes', 0)):>10} {_mb(io.get('write_bytes', 0)):>10} "
            f"{_mb(io.get('read_chars', 0)):>10} {_mb(io.get('write_chars', 0)):>10} "
            f"{req.get('total', 0):>8} {req.get('retries', 0):>7} {req.get('throttled', 0):>5}"
        )
    if data["queues"]:
        lines.append("")
        lines.append(f"{'queue':<18} {'cap':>4} {'peak':>5} {'mean':>6} {'full':>5} {'empty':>6}")
        for q in data["queues"]:
            lines.append(
                f"{q['name']:<18} {q['capacity']:>4} {q['peak']:>5} {q['mean']:>6.1f} "
                f"{q['full_fraction'] * 100:>4.0f}% {q['empty_fraction'] * 100:>5.0f}%"
            )
    req, tr = data["requests"], data["transfer"]
    lines.append("")
    hosts = ", ".join(f"{n} to {h}" for h, n in sorted(req["by_host"].items())) or "none"
    paused = (
        f", {req['pauses']} pauses over a second ({req['paused_seconds']:.1f} s)"
        if req.get("pauses")
        else ""
    )
    lines.append(
        f"requests: {req['total']} ({hosts}); {req['retries']} retries, "
        f"{req['throttled']} throttled (429){paused}"
    )
    lines.append(
        f"transfer: {human_bytes(tr['bytes_received'])} received, "
        f"{human_bytes(tr['bytes_sent'])} sent; avoided: {tr['layers_skipped']} layers "
        f"({human_bytes(tr['bytes_skipped'])}) already at the destination, "
        f"{tr['mounts']} blobs mounted, {data['images']['up_to_date']} images up to "
        f"date"
    )
    kinds = data["images"]["failed_by_kind"]
    if kinds:
        lines.append("failures: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()))
    verdict = data["bottleneck"]
    lines.append(f"bottleneck: {verdict['reason']}")
    lines += image_lines(data["image_results"])
    lines.append(
        f"wall {data['wall_seconds']:.2f} s, {_mb(data['bytes'])} MB moved "
        f"({data['throughput_mb_s']} MB/s), peak memory of the process tree "
        f"{_mb(data['peak_pss_total'])} MB (PSS)"
    )
    return "\n".join(lines)
