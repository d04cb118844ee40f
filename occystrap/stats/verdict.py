"""The bottleneck verdict: which stage limited a run, and why (pure; docs/stats.md).

It reads the stage and queue entries of a stats document (`schema.to_dict`): each stage's
busy split and CPU, each queue's occupancy as the supervisor sampled it. The thresholds are
named here so the docs and the tests can quote them.
"""

from __future__ import annotations

from typing import Any

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
        return {
            "stage": None,
            "kind": "latency-bound",
            "reason": f"no stage was busy {BUSY_FLOOR:.0%} of the time (the busiest, "
            f"{top['stage']}, {top['busy_fraction']:.0%}): round trips, start-up "
            f"and small images dominate; raise -J for many images",
        }
    order = [s["stage"] for s in stages]
    stage, notes = top, []
    while True:
        q = out_q.get(stage["stage"])
        blocked = (
            stage["wait_out_seconds"] / stage["wall_seconds"] if stage["wall_seconds"] else 0.0
        )
        if q is None or not (
            q["full_fraction"] >= BACKPRESSURE
            or blocked >= BACKPRESSURE
            or q["mean"] >= q["capacity"] / 2
        ):
            break
        nxt = order.index(stage["stage"]) + 1
        if nxt >= len(order) or order[nxt] not in by_name:
            break
        notes.append(
            f"{stage['stage']} was blocked {blocked:.0%} of the time on its output "
            f"queue (full {q['full_fraction']:.0%} of samples)"
        )
        stage = by_name[order[nxt]]
    name = stage["stage"]
    busy = stage["busy_seconds"]
    cpu_share = stage["cpu_seconds"] / busy if busy > 0 else 0.0
    remote = stage.get("requests", {}).get("total", 0) > 0
    if cpu_share >= CPU_BOUND:
        kind = "CPU-bound"
    elif name in ("fetch", "write"):
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
    reason = (
        f"{name}: {stage['busy_fraction']:.0%} busy, {cpu_share:.0%} of that on CPU, "
        f"{where} → {kind}"
    )
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    return {
        "stage": name,
        "kind": kind,
        "reason": reason,
        "busy_fraction": stage["busy_fraction"],
        "cpu_per_busy": round(cpu_share, 2),
    }
