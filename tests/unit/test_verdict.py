"""stats/verdict.py: the kind of limit each stage can be, and the edges of the blame walk.
(The walk itself is in test_stats.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from occystrap.stats.verdict import BUSY_FLOOR, CPU_BOUND, bottleneck

NAMES = ("resolve", "fetch", "verify", "compress", "write")


def _stage(
    name: str,
    busy: float,
    cpu: float = 0.0,
    wait_out: float = 0.0,
    requests: int = 0,
    wall: float = 10.0,
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


def _queues(full: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    full = full or {}
    return [
        {
            "name": f"{a}>{b}",
            "from": a,
            "to": b,
            "capacity": 64,
            "mean": 64.0 if full.get(a) else 0.0,
            "full_fraction": 1.0 if full.get(a) else 0.0,
            "empty_fraction": 0.0 if full.get(a) else 1.0,
        }
        for a, b in zip(NAMES, NAMES[1:], strict=False)
    ]


def _only(name: str, **kw: Any) -> list[dict[str, Any]]:
    return [_stage(n, 8.0, **kw) if n == name else _stage(n, 0.1) for n in NAMES]


@pytest.mark.parametrize(
    "name, kw, kind",
    [
        ("fetch", {"cpu": 8.0 * CPU_BOUND, "requests": 5}, "CPU-bound"),
        ("fetch", {"cpu": 1.0, "requests": 5}, "network-bound"),
        ("fetch", {"cpu": 1.0}, "disk-bound"),  # a local source
        ("write", {"cpu": 1.0, "requests": 5}, "network-bound"),  # into a registry
        ("write", {"cpu": 1.0}, "disk-bound"),
        ("resolve", {"cpu": 1.0, "requests": 50}, "latency-bound"),
        ("verify", {"cpu": 1.0}, "disk-bound"),
        ("compress", {"cpu": 7.9}, "CPU-bound"),
    ],
)
def test_the_kind_of_each_stage(name: str, kw: dict[str, Any], kind: str) -> None:
    verdict = bottleneck(_only(name, **kw), _queues())
    assert (verdict["stage"], verdict["kind"]) == (name, kind)
    assert verdict["reason"].startswith(f"{name}: 80% busy") and verdict["reason"].endswith(kind)


def test_the_last_stage_takes_the_blame_it_is_passed() -> None:
    """Every queue full: the walk ends at write, the last stage."""
    stages = [_stage(n, 9.0, wait_out=6.0 if n != "write" else 0.0) for n in NAMES]
    verdict = bottleneck(stages, _queues(dict.fromkeys(NAMES, True)))
    assert verdict["stage"] == "write" and "it is the last stage" in verdict["reason"]
    assert verdict["reason"].count("blocked") == 4


def test_the_walk_stops_at_a_stage_that_did_not_report() -> None:
    stages = [
        _stage("resolve", 0.1),
        _stage("fetch", 9.0, wait_out=6.0, requests=3),
        {"stage": "verify", "peak_rss": 0, "peak_pss": 0},
    ]
    verdict = bottleneck(stages, _queues({"fetch": True}))
    assert verdict["stage"] == "fetch"


def test_nothing_reported_and_nothing_busy() -> None:
    assert bottleneck([{"stage": "fetch", "peak_rss": 0, "peak_pss": 0}], []) == {
        "stage": None,
        "kind": "unknown",
        "reason": "no stage reported",
    }
    idle = [_stage(n, 10.0 * BUSY_FLOOR * 0.9) for n in NAMES]
    verdict = bottleneck(idle, _queues())
    assert verdict["kind"] == "latency-bound" and verdict["stage"] is None
