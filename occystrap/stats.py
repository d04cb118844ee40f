"""Where the time and memory went: psutil samples of every stage process, and the reports.

Memory is sampled by the supervisor (PSS where the kernel offers smaps_rollup, else RSS),
so a stage that dies still has its peak on record. CPU and time splits come from each
stage's own StageReport.
"""

from __future__ import annotations

import json
import os
from typing import Any

import psutil

SCHEMA = "occystrap.stats/1"


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


def to_dict(result: Any) -> dict[str, Any]:
    from occystrap.pipeline import STAGES

    stages = []
    for name in STAGES:
        report = result.reports.get(name)
        mem = result.memory.get(name, {"rss": 0, "pss": 0})
        entry: dict[str, Any] = {"stage": name, "peak_rss": mem["rss"], "peak_pss": mem["pss"]}
        if report is not None:
            entry.update({
                "items_in": report.items_in, "items_out": report.items_out,
                "bytes_in": report.bytes_in, "bytes_out": report.bytes_out,
                "busy_seconds": round(report.busy_seconds, 3),
                "wait_in_seconds": round(report.wait_in_seconds, 3),
                "wait_out_seconds": round(report.wait_out_seconds, 3),
                "cpu_seconds": round(report.cpu_seconds, 3),
                "wall_seconds": round(report.wall_seconds, 3),
            })
        stages.append(entry)
    moved = sum(d.bytes for d in result.done)
    return {
        "schema": SCHEMA,
        "wall_seconds": round(result.wall_seconds, 3),
        "bytes": moved,
        "throughput_mb_s": round(moved / 1e6 / result.wall_seconds, 1)
        if result.wall_seconds else 0.0,
        "peak_pss_total": result.peak_pss_total,
        "supervisor": result.memory.get("supervisor", {"rss": 0, "pss": 0}),
        "images": {"done": len(result.done), "failed": len(result.failed)},
        "stages": stages,
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


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
    lines.append(
        f"wall {data['wall_seconds']:.2f} s, {_mb(data['bytes'])} MB moved "
        f"({data['throughput_mb_s']} MB/s), peak memory of the process tree "
        f"{_mb(data['peak_pss_total'])} MB (PSS)")
    return "\n".join(lines)


def to_json(result: Any) -> str:
    return json.dumps(to_dict(result), indent=2)
