"""Where the time and memory went: psutil samples of every stage process, and the reports.

Memory, I/O and queue depths are sampled by the supervisor (PSS where the kernel offers
smaps_rollup, else RSS), so a stage that dies still has its peak on record. CPU, time splits
and request counts come from each stage's own StageReport. From these the report names the
bottleneck stage and says why, so a user can tell which knob (-j, -J, disk, CPU) to turn.
See docs/stats.md for the schema.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

SCHEMA = "occystrap.stats/2"


class MemorySampler:
    def __init__(self, pids: dict[str, int]) -> None:
        self._procs: dict[str, psutil.Process] = {}
        for name, pid in {"supervisor": os.getpid(), **pids}.items():
            try:
                self._procs[name] = psutil.Process(pid)
            except psutil.Error:
                pass
        self.peaks: dict[str, dict[str, int]] = {
            name: {"rss": 0, "pss": 0} for name in self._procs}
        self.peak_total = 0

    def sample(self) -> None:
        total = 0
        for name, proc in list(self._procs.items()):
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                self._procs.pop(name)
                continue
            pss = getattr(info, "pss", info.rss)
            peak = self.peaks[name]
            peak["rss"] = max(peak["rss"], info.rss)
            peak["pss"] = max(peak["pss"], pss)
            total += pss
        self.peak_total = max(self.peak_total, total)
        self.last_total = total


class QueueStats:
    """Occupancy of one bounded queue, from the supervisor's samples of `qsize()`.

    A queue that sits full says its consumer is the slow one; one that sits empty says its
    producer is. The mean and the share of samples at either end are what the verdict uses.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.peak = 0
        self.total = 0
        self.samples = 0
        self.full = 0
        self.empty = 0
        self.last = 0

    def add(self, depth: int) -> None:
        self.last = depth
        self.peak = max(self.peak, depth)
        self.total += depth
        self.samples += 1
        self.full += depth >= self.capacity
        self.empty += depth == 0

    def to_dict(self) -> dict[str, Any]:
        n = max(self.samples, 1)
        return {"capacity": self.capacity, "peak": self.peak,
                "mean": round(self.total / n, 2), "full_fraction": round(self.full / n, 3),
                "empty_fraction": round(self.empty / n, 3), "samples": self.samples}


def _qsize(queue: Any) -> int:
    try:
        return int(queue.qsize())
    except (NotImplementedError, OSError, ValueError):
        return 0  # macOS has no sem_getvalue; a closed queue says nothing


class Sampler(MemorySampler):
    """Everything the supervisor samples: memory and I/O per process, queue depths, and once
    a second a row of the time series (bytes each stage moved in that second, queue depths,
    tree PSS). Sampling is a handful of /proc reads and semaphore peeks every ~100 ms."""

    def __init__(self, pids: dict[str, int], queues: dict[str, tuple[Any, int]] | None = None,
                 moved: Any = None, stages: tuple[str, ...] = (), interval: float = 1.0) -> None:
        super().__init__(pids)
        self._queues = queues or {}
        self.queue_stats = {name: QueueStats(cap) for name, (_, cap) in self._queues.items()}
        self._moved = moved
        self._stages = stages
        self._interval = interval
        self.started = time.monotonic()
        self._next = self.started + interval
        self._last_moved = [0] * len(stages)
        self._last_io: dict[str, tuple[int, int]] = {}
        self.io: dict[str, tuple[int, int]] = {}  # stage → (read_chars, write_chars), last seen
        self.series: list[dict[str, Any]] = []
        self._window_peak: dict[str, int] = {}

    def sample(self) -> None:
        super().sample()
        for name, (queue, _) in self._queues.items():
            depth = _qsize(queue)
            self.queue_stats[name].add(depth)
            self._window_peak[name] = max(self._window_peak.get(name, 0), depth)
        for name, proc in self._procs.items():
            if name == "supervisor":
                continue
            try:
                io = proc.io_counters()
            except (psutil.Error, AttributeError, NotImplementedError):
                continue
            self.io[name] = (getattr(io, "read_chars", io.read_bytes),
                             getattr(io, "write_chars", io.write_bytes))
        now = time.monotonic()
        if now >= self._next:
            self.row(now)

    def row(self, now: float | None = None) -> None:
        """Close the current window of the series (also called once at the end)."""
        now = time.monotonic() if now is None else now
        span = now - (self._next - self._interval)
        if span <= 0.01:
            return
        stages: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(self._stages):
            total = int(self._moved[i]) if self._moved is not None else 0
            delta, self._last_moved[i] = total - self._last_moved[i], total
            rd, wr = self.io.get(name, (0, 0))
            lrd, lwr = self._last_io.get(name, (0, 0))
            self._last_io[name] = (rd, wr)
            stages[name] = {"bytes": delta, "mb_s": round(delta / 1e6 / span, 2),
                            "io_read": max(rd - lrd, 0), "io_write": max(wr - lwr, 0)}
        self.series.append({
            "t": round(now - self.started, 2),
            "seconds": round(span, 3),
            "stages": stages,
            "queues": {name: self._window_peak.get(name, 0) for name in self._queues},
            "pss_total": getattr(self, "last_total", 0),
        })
        self._window_peak = {}
        self._next = now + self._interval



_EMPTY_MEM = {"rss": 0, "pss": 0}
_REQUEST_KEYS = ("retries", "throttled", "bytes_received", "bytes_sent", "mounts", "pauses",
                 "paused_seconds")


def _stage_entry(name: str, report: Any, mem: dict[str, int], span: float) -> dict[str, Any]:
    """`span`: the longest stage's wall time. Busy shares are of that, not of the stage's own
    life, so resolve finishing early and idle is not mistaken for resolve being busy."""
    entry: dict[str, Any] = {"stage": name, "peak_rss": mem["rss"], "peak_pss": mem["pss"]}
    if report is None:
        return entry
    wall = span
    entry.update({
        "items_in": report.items_in, "items_out": report.items_out,
        "bytes_in": report.bytes_in, "bytes_out": report.bytes_out,
        "busy_seconds": round(report.busy_seconds, 3),
        "wait_in_seconds": round(report.wait_in_seconds, 3),
        "wait_out_seconds": round(report.wait_out_seconds, 3),
        "cpu_seconds": round(report.cpu_seconds, 3),
        "wall_seconds": round(report.wall_seconds, 3),
        "busy_fraction": round(min(report.busy_seconds / wall, 1.0), 3) if wall > 0 else 0.0,
        "io": {"read_bytes": report.io_read_bytes, "write_bytes": report.io_write_bytes,
               "read_chars": report.io_read_chars, "write_chars": report.io_write_chars},
        "requests": {"total": sum(report.requests.values()), "by_host": dict(report.requests),
                     **{k: getattr(report, k) for k in _REQUEST_KEYS}},
        "layers_skipped": report.layers_skipped, "bytes_skipped": report.bytes_skipped,
    })
    return entry


def _image_entries(result: Any) -> list[dict[str, Any]]:
    seconds = getattr(result, "image_seconds", {})
    images: list[dict[str, Any]] = []
    for d in result.done:
        images.append({
            "source": d.source, "destination": d.destination,
            "result": "up_to_date" if d.up_to_date else "done",
            "seconds": round(seconds.get(d.image_id, 0.0), 3), "bytes": d.bytes,
            "layers": d.layers, "skipped_layers": d.skipped_layers,
            "manifest_digest": d.manifest_digest, "detail": d.detail})
    for f in result.failed:
        images.append({"source": f.source, "result": "failed", "stage": f.stage,
                       "reason": f.reason, "seconds": round(seconds.get(f.image_id, 0.0), 3)})
    return images


def run_info(shard: tuple[int, int] | None, wall_seconds: float) -> dict[str, Any]:
    """Which run wrote a stats document, for `occystrap report merge`: the --shard (index and
    count, or None), the host (a pod's name under Kubernetes), the occystrap version, and
    when it started and finished (UTC, ISO 8601, whole seconds; started = finished - wall)."""
    from occystrap import __version__

    finished = datetime.now(UTC).replace(microsecond=0)
    started = finished - timedelta(seconds=round(wall_seconds))
    return {"shard": {"index": shard[0], "count": shard[1]} if shard else None,
            "hostname": socket.gethostname(), "version": __version__,
            "started_at": started.isoformat().replace("+00:00", "Z"),
            "finished_at": finished.isoformat().replace("+00:00", "Z")}


def to_dict(result: Any, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """The `occystrap.stats/2` document of a run (docs/stats.md); `shard` is --shard K/N."""
    from occystrap.pipeline import STAGES

    span = max((r.wall_seconds for r in result.reports.values()), default=0.0)
    stages = [_stage_entry(name, result.reports.get(name), result.memory.get(name, _EMPTY_MEM),
                           span) for name in STAGES]
    queues = []
    for name, q in getattr(result, "queues", {}).items():
        src, _, dst = name.partition(">")
        queues.append({"name": name, "from": src, "to": dst, **q})
    by_host: dict[str, int] = {}
    totals = dict.fromkeys(_REQUEST_KEYS, 0)
    layers_skipped = bytes_skipped = 0
    for st in stages:
        req = st.get("requests")
        if req:
            for host, n in req["by_host"].items():
                by_host[host] = by_host.get(host, 0) + n
            for k in _REQUEST_KEYS:
                totals[k] += req[k]
        if st["stage"] == "write":  # the end of the line sees every skipped layer once
            layers_skipped, bytes_skipped = st.get("layers_skipped", 0), st.get(
                "bytes_skipped", 0)
    moved = sum(d.bytes for d in result.done)
    return {
        "schema": SCHEMA,
        "run": run_info(shard, result.wall_seconds),
        "wall_seconds": round(result.wall_seconds, 3),
        "bytes": moved,
        "throughput_mb_s": round(moved / 1e6 / result.wall_seconds, 1)
        if result.wall_seconds else 0.0,
        "peak_pss_total": result.peak_pss_total,
        "supervisor": result.memory.get("supervisor", _EMPTY_MEM),
        "images": {"done": len(result.done), "failed": len(result.failed),
                   "up_to_date": sum(1 for d in result.done if d.up_to_date)},
        "image_results": _image_entries(result),
        "stages": stages,
        "queues": queues,
        "requests": {"total": sum(by_host.values()), "by_host": by_host,
                     "retries": totals["retries"], "throttled": totals["throttled"],
                     "pauses": totals["pauses"],
                     "paused_seconds": round(totals["paused_seconds"], 3)},
        "transfer": {"bytes_received": totals["bytes_received"],
                     "bytes_sent": totals["bytes_sent"], "mounts": totals["mounts"],
                     "layers_skipped": layers_skipped, "bytes_skipped": bytes_skipped},
        "bottleneck": bottleneck(stages, queues),
        "series": list(getattr(result, "series", [])),
    }


# -- the verdict ---------------------------------------------------------------------------

BUSY_FLOOR = 0.3  # below this, no stage was the limit: round trips and start-up were
BACKPRESSURE = 0.25  # an output queue full (or its producer blocked) this share of the time
CPU_BOUND = 0.8  # CPU seconds per busy second at which a stage is computing, not waiting


def bottleneck(stages: list[dict[str, Any]], queues: list[dict[str, Any]]) -> dict[str, Any]:
    """Name the stage that limited the run, and why, from the busy split and queue samples.

    Start from the busiest stage. If its output queue was mostly full (or it spent a good
    share of its time blocked putting), it was waiting on the stage after it, so the blame
    moves downstream until a stage whose output was not backed up. That stage's kind then
    says what it was bound by: CPU when its CPU time nearly matches its busy time; else the
    network for fetch (and write into a registry), the disk for local work, round trips for
    resolve.
    """
    by_name = {s["stage"]: s for s in stages if "wall_seconds" in s}
    out_q = {q["from"]: q for q in queues}
    if not by_name:
        return {"stage": None, "kind": "unknown", "reason": "no stage reported"}
    top = max(by_name.values(), key=lambda s: s["busy_fraction"])
    if top["busy_fraction"] < BUSY_FLOOR:
        return {"stage": None, "kind": "latency-bound",
                "reason": f"no stage was busy {BUSY_FLOOR:.0%} of the time (the busiest, "
                          f"{top['stage']}, {top['busy_fraction']:.0%}): round trips, start-up "
                          f"and small images dominate; raise -J for many images"}
    order = [s["stage"] for s in stages]
    stage, notes = top, []
    while True:
        q = out_q.get(stage["stage"])
        blocked = stage["wait_out_seconds"] / stage["wall_seconds"] if stage[
            "wall_seconds"] else 0.0
        if q is None or not (q["full_fraction"] >= BACKPRESSURE or blocked >= BACKPRESSURE
                             or q["mean"] >= q["capacity"] / 2):
            break
        nxt = order.index(stage["stage"]) + 1
        if nxt >= len(order) or order[nxt] not in by_name:
            break
        notes.append(f"{stage['stage']} was blocked {blocked:.0%} of the time on its output "
                     f"queue (full {q['full_fraction']:.0%} of samples)")
        stage = by_name[order[nxt]]
    name = stage["stage"]
    busy = stage["busy_seconds"]
    cpu_share = stage["cpu_seconds"] / busy if busy > 0 else 0.0
    remote = stage.get("requests", {}).get("total", 0) > 0
    if cpu_share >= CPU_BOUND:
        kind = "CPU-bound"
    elif name == "fetch":
        kind = "network-bound" if remote else "disk-bound"
    elif name == "write":
        kind = "network-bound" if remote else "disk-bound"
    elif name == "resolve":
        kind = "latency-bound"
    else:
        kind = "disk-bound"
    q = out_q.get(name)
    if q is None:
        where = "it is the last stage"
    elif q["empty_fraction"] >= 0.5:
        where = "its output queue mostly empty"
    else:
        where = f"its output queue {q['mean']:.1f}/{q['capacity']} on average"
    reason = (f"{name}: {stage['busy_fraction']:.0%} busy, {cpu_share:.0%} of that on CPU, "
              f"{where} → {kind}")
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    return {"stage": name, "kind": kind, "reason": reason,
            "busy_fraction": stage["busy_fraction"], "cpu_per_busy": round(cpu_share, 2)}


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
            f"{rate:>7} {_mb(s['peak_pss']):>8}")
    lines.append("")
    lines.append(f"{'stage':<9} {'busy%':>6} {'disk rd MB':>10} {'disk wr MB':>10} "
                 f"{'file rd MB':>10} {'file wr MB':>10} {'requests':>8} {'retries':>7} "
                 f"{'429s':>5}")
    for s in data["stages"]:
        io = s.get("io", {})
        req = s.get("requests", {})
        lines.append(
            f"{s['stage']:<9} {s.get('busy_fraction', 0) * 100:>5.0f}% "
            f"{_mb(io.get('read_bytes', 0)):>10} {_mb(io.get('write_bytes', 0)):>10} "
            f"{_mb(io.get('read_chars', 0)):>10} {_mb(io.get('write_chars', 0)):>10} "
            f"{req.get('total', 0):>8} {req.get('retries', 0):>7} {req.get('throttled', 0):>5}")
    if data["queues"]:
        lines.append("")
        lines.append(f"{'queue':<18} {'cap':>4} {'peak':>5} {'mean':>6} {'full':>5} "
                     f"{'empty':>6}")
        for q in data["queues"]:
            lines.append(f"{q['name']:<18} {q['capacity']:>4} {q['peak']:>5} {q['mean']:>6.1f} "
                         f"{q['full_fraction'] * 100:>4.0f}% {q['empty_fraction'] * 100:>5.0f}%")
    req, tr = data["requests"], data["transfer"]
    lines.append("")
    hosts = ", ".join(f"{n} to {h}" for h, n in sorted(req["by_host"].items())) or "none"
    paused = (f", {req['pauses']} pauses over a second ({req['paused_seconds']:.1f} s)"
              if req.get("pauses") else "")
    lines.append(f"requests: {req['total']} ({hosts}); {req['retries']} retries, "
                 f"{req['throttled']} throttled (429){paused}")
    lines.append(f"transfer: {human_bytes(tr['bytes_received'])} received, "
                 f"{human_bytes(tr['bytes_sent'])} sent; avoided: {tr['layers_skipped']} layers "
                 f"({human_bytes(tr['bytes_skipped'])}) already at the destination, "
                 f"{tr['mounts']} blobs mounted, {data['images']['up_to_date']} images up to "
                 f"date")
    verdict = data["bottleneck"]
    lines.append(f"bottleneck: {verdict['reason']}")
    if len(data["image_results"]) > 1:
        lines.append("")
        lines.append(f"{'result':<10} {'seconds':>8} {'MB':>9} {'layers':>6} {'skipped':>7}  "
                     "image")
        for im in data["image_results"]:
            lines.append(f"{im['result']:<10} {im['seconds']:>8.2f} {_mb(im.get('bytes', 0)):>9} "
                         f"{im.get('layers', 0):>6} {im.get('skipped_layers', 0):>7}  "
                         f"{im['source']}")
    lines.append(
        f"wall {data['wall_seconds']:.2f} s, {_mb(data['bytes'])} MB moved "
        f"({data['throughput_mb_s']} MB/s), peak memory of the process tree "
        f"{_mb(data['peak_pss_total'])} MB (PSS)")
    return "\n".join(lines)


def to_json(result: Any, shard: tuple[int, int] | None = None) -> str:
    return json.dumps(to_dict(result, shard), indent=2)


def total_retries(result: Any) -> int:
    return sum(r.retries for r in result.reports.values())


def summary_line(result: Any) -> str:
    """One line in the original occystrap's style:
    `Summary: 30/30 images, 312 layers, 2.1 GB, 14.2 s, 3 retries`."""
    moved = sum(d.bytes for d in result.done)
    layers = sum(d.layers for d in result.done)
    total = len(result.done) + len(result.failed)
    current = sum(1 for d in result.done if d.up_to_date)
    noted = f" ({current} already up to date)" if current else ""
    retries = total_retries(result)
    line = (f"Summary: {len(result.done)}/{total} images{noted}, {layers} layers, "
            f"{human_bytes(moved)}, {result.wall_seconds:.1f} s, "
            f"{retries} {'retry' if retries == 1 else 'retries'}")
    foreign = sum(d.foreign for d in result.done)
    if foreign:
        line += f", {foreign} foreign layer{'s' if foreign > 1 else ''} not copied"
    referred = sum(d.referrers for d in result.done)
    if referred:
        line += f", {referred} referrer{'s' if referred > 1 else ''}"
    if result.failed:
        line += f", {len(result.failed)} failed"
    return line


# -- live progress -------------------------------------------------------------------------

class ProgressDisplay:
    """Live progress on a terminal: a line per image being fetched and one overall line
    (bytes done/total, rate, ETA), redrawn in place a few times a second.

    The supervisor calls `update` every loop; redrawing is rate-limited here, and `clear`
    erases the block so other output (an image's result line) can be printed cleanly.
    """

    MAX_IMAGES = 6

    def __init__(self, stream: Any, interval: float = 0.2, width: int = 100) -> None:
        self.stream = stream
        self.interval = interval
        self.width = width
        self._drawn = 0
        self._last = 0.0
        self._history: list[tuple[float, int]] = []

    def clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self.stream.flush()
            self._drawn = 0

    def lines(self, result: Any, now: float) -> list[str]:
        done = total = 0
        active = []
        finished = getattr(result, "image_seconds", {})
        for image_id, p in result.progress.items():
            done += p.done
            total += p.total
            if image_id not in finished and (p.done < p.total or p.layers_done < p.layers):
                active.append(p)
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[0][0] > 3.0:
            self._history.pop(0)
        t0, d0 = self._history[0]
        rate = (done - d0) / (now - t0) if now - t0 > 0.2 else 0.0
        out = []
        for p in active[:self.MAX_IMAGES]:
            pct = p.done * 100 // p.total if p.total else 0
            label = p.source if len(p.source) <= 48 else "…" + p.source[-47:]
            out.append(f"  {label:<48} {human_bytes(p.done):>9} / {human_bytes(p.total):<9} "
                       f"{pct:>3}%  {p.layers_done}/{p.layers} layers")
        if len(active) > self.MAX_IMAGES:
            out.append(f"  … and {len(active) - self.MAX_IMAGES} more")
        finished_n = len(result.done) + len(result.failed)
        of = f"/{result.sources}" if getattr(result, "sources", 0) >= finished_n else ""
        eta = f", ETA {(total - done) / rate:.0f} s" if rate > 0 and total > done else ""
        out.append(f"{finished_n}{of} images, {human_bytes(done)} / {human_bytes(total)}, "
                   f"{human_bytes(rate)}/s{eta}")
        return [line[:self.width] for line in out]

    def update(self, result: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = self.lines(result, now)
        self.clear()
        self.stream.write("\n".join(text) + "\n")
        self.stream.flush()
        self._drawn = len(text)
