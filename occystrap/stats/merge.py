"""One report for a sharded mirror: the shards' `--stats-file` documents added up.

Each shard of a mirror (`occystrap --stats-file F process --shard K/N ...`) writes one
`occystrap.stats/2` document (docs/stats.md) whose `run` block names its shard. `merge` checks
that the files belong together (same N, each K once, none missing) and adds them up: images
copied, up to date and failed (with reasons), bytes moved and avoided, requests, and each
shard's wall time. `load` is the only I/O here; `merge`, `to_text` and `exit_code` are pure.
The merged document's schema is `occystrap.mirror-report/1` (docs/bulk.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from occystrap.errors import OccystrapError
from occystrap.stats.schema import SCHEMA as STATS_SCHEMA
from occystrap.stats.schema import human_bytes

SCHEMA = "occystrap.mirror-report/1"


@dataclass(frozen=True)
class ShardFile:
    """One stats document and the path it came from (for messages)."""

    path: str
    doc: dict[str, Any]

    @property
    def shard(self) -> tuple[int, int] | None:
        """(K, N) from the document's `run.shard`, or None for a run without --shard."""
        shard = (self.doc.get("run") or {}).get("shard")
        return (int(shard["index"]), int(shard["count"])) if shard else None

    @property
    def label(self) -> str:
        shard = self.shard
        return f"{shard[0]}/{shard[1]}" if shard else "-"


def load(paths: Iterable[str]) -> list[ShardFile]:
    """Read each path as an `occystrap.stats/2` document.

    Raises OccystrapError (exit 1), naming the file, for a file that cannot be read, is not
    JSON (with the line), or is not a stats document of this schema.
    """
    files = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except OSError as exc:
            raise OccystrapError(f"{path}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise OccystrapError(f"{path}: not a stats file (not UTF-8 text)") from None
        except json.JSONDecodeError as exc:
            raise OccystrapError(
                f"{path}: not JSON ({exc.msg} at line {exc.lineno}); a "
                "stats file is written whole, so this one is not "
                "occystrap's"
            ) from None
        schema = doc.get("schema") if isinstance(doc, dict) else None
        if schema != STATS_SCHEMA or not isinstance(doc.get("image_results"), list):
            raise OccystrapError(
                f"{path}: not an {STATS_SCHEMA} document (schema: "
                f"{schema or 'none'}); write it with --stats-file"
            )
        _check_shape(path, doc)
        files.append(ShardFile(path, doc))
    return files


def _check_shape(path: str, doc: dict[str, Any]) -> None:
    """What merge relies on beyond the schema name: a `run.shard` of 0 <= index < count (or
    none), an object per image result, and objects for the sections it adds up.
    OccystrapError naming the file otherwise."""
    for section in ("images", "transfer", "requests"):
        if section in doc and not isinstance(doc[section], dict):
            raise OccystrapError(
                f"{path}: {section!r} is not an object; the file is not "
                "a stats file as occystrap writes it"
            )
    run = doc.get("run")
    shard = run.get("shard") if isinstance(run, dict) else None
    if (
        run is not None
        and not isinstance(run, dict)
        or shard is not None
        and not (
            isinstance(shard, dict)
            and type(shard.get("index")) is int
            and type(shard.get("count")) is int
            and 0 <= shard["index"] < shard["count"]
        )
    ):
        raise OccystrapError(f'{path}: run.shard is not {{"index": K, "count": N}} with 0 <= K < N')
    if not all(isinstance(im, dict) for im in doc["image_results"]):
        raise OccystrapError(f"{path}: image_results holds something that is not an object")


def _check_shards(files: Sequence[ShardFile]) -> tuple[int | None, list[int]]:
    """The shard count N and the missing indexes. Files of different N, a shard given twice,
    or sharded and unsharded files together cannot be one mirror: OccystrapError."""
    sharded = [f for f in files if f.shard is not None]
    if not sharded:
        return None, []
    plain = next((f for f in files if f.shard is None), None)
    if plain is not None:
        raise OccystrapError(
            f"{plain.path}: written without --shard, but {sharded[0].path} "
            f"is shard {sharded[0].label}: not one mirror"
        )
    count = sharded[0].shard[1]  # type: ignore[index]
    seen: dict[int, ShardFile] = {}
    for f in sharded:
        k, n = f.shard  # type: ignore[misc]
        if n != count:
            raise OccystrapError(
                f"{f.path}: shard {k}/{n}, but {sharded[0].path} is shard "
                f"{sharded[0].label}: not one mirror"
            )
        if k in seen:
            first = seen[k]
            raise OccystrapError(
                f"shard {k}/{n} twice: {first.path} (finished {_finished(first)}) and "
                f"{f.path} (finished {_finished(f)}); give one run's files"
            )
        seen[k] = f
    return count, [k for k in range(count) if k not in seen]


def _finished(f: ShardFile) -> str:
    return str((f.doc.get("run") or {}).get("finished_at", "?"))


def _shard_summary(f: ShardFile) -> dict[str, Any]:
    doc, run = f.doc, f.doc.get("run") or {}
    images = doc.get("images", {})
    transfer = doc.get("transfer", {})
    done, current = int(images.get("done", 0)), int(images.get("up_to_date", 0))
    return {
        "file": f.path,
        "shard": run.get("shard"),
        "hostname": run.get("hostname"),
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "wall_seconds": float(doc.get("wall_seconds", 0.0)),
        "images": {
            "copied": done - current,
            "up_to_date": current,
            "failed": int(images.get("failed", 0)),
        },
        "bytes": int(doc.get("bytes", 0)),
        "bytes_received": int(transfer.get("bytes_received", 0)),
        "bytes_sent": int(transfer.get("bytes_sent", 0)),
        "bytes_avoided": int(transfer.get("bytes_skipped", 0)),
        "layers_avoided": int(transfer.get("layers_skipped", 0)),
        "mounts": int(transfer.get("mounts", 0)),
        "requests": {
            key: int(doc.get("requests", {}).get(key, 0))
            for key in ("total", "retries", "throttled")
        },
        "peak_pss_total": int(doc.get("peak_pss_total", 0)),
    }


def merge(files: Sequence[ShardFile]) -> dict[str, Any]:
    """The `occystrap.mirror-report/1` document of several shards' stats (see docs/bulk.md).

    An image is keyed by its destination (by its source when it failed); one that appears in
    two files is listed under `duplicates`. Raises OccystrapError for files that cannot be
    one mirror (see `_check_shards`).
    """
    count, missing = _check_shards(files)
    ordered = sorted(files, key=lambda f: (f.shard or (0, 0), f.path))
    shards = []
    for f in ordered:
        try:
            shards.append(_shard_summary(f))
        except (TypeError, ValueError, AttributeError) as exc:  # a hand-edited file
            raise OccystrapError(f"{f.path}: malformed stats document ({exc})") from None
    seen: dict[str, str] = {}
    duplicates: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}
    totals = {"copied": 0, "up_to_date": 0, "failed": 0}
    for f in ordered:
        for image in f.doc["image_results"]:
            result = image.get("result")
            key = image.get("destination") or image.get("source", "?")
            if key in seen:
                duplicates.append({"image": key, "files": [seen[key], f.path]})
            seen[key] = f.path
            if result == "failed":
                totals["failed"] += 1
                failed.append(
                    {
                        "source": image.get("source"),
                        "stage": image.get("stage"),
                        "reason": image.get("reason"),
                        "shard": f.label,
                        "file": f.path,
                    }
                )
                kind = str(image.get("kind") or "unknown")  # older documents have none
                kinds[kind] = kinds.get(kind, 0) + 1
            elif result == "up_to_date":
                totals["up_to_date"] += 1
            else:
                totals["copied"] += 1
    walls = [s["wall_seconds"] for s in shards]
    started = [s["started_at"] for s in shards if s["started_at"]]
    finished = [s["finished_at"] for s in shards if s["finished_at"]]
    return {
        "schema": SCHEMA,
        "complete": not missing and not duplicates,
        "shard_count": count,
        "missing_shards": missing,
        "images": {"total": sum(totals.values()), **totals},
        "bytes": {
            "copied": sum(s["bytes"] for s in shards),
            "received": sum(s["bytes_received"] for s in shards),
            "sent": sum(s["bytes_sent"] for s in shards),
            "avoided": sum(s["bytes_avoided"] for s in shards),
            "layers_avoided": sum(s["layers_avoided"] for s in shards),
            "mounts": sum(s["mounts"] for s in shards),
        },
        "requests": {
            key: sum(s["requests"][key] for s in shards)
            for key in ("total", "retries", "throttled")
        },
        "wall_seconds": {
            "slowest_shard": max(walls, default=0.0),
            "all_shards": round(sum(walls), 3),
        },
        # ISO 8601 UTC with a Z: these sort as text
        "started_at": min(started, default=None),
        "finished_at": max(finished, default=None),
        "peak_pss_max": max((s["peak_pss_total"] for s in shards), default=0),
        "shards": shards,
        "failed": failed,
        "failed_by_kind": dict(sorted(kinds.items())),
        "duplicates": duplicates,
    }


def exit_code(merged: dict[str, Any]) -> int:
    """1 when an image failed, a shard is missing or an image was copied twice; else 0."""
    return 1 if merged["images"]["failed"] or not merged["complete"] else 0


def to_text(merged: dict[str, Any]) -> str:
    """The merged report for people: totals, a row per shard, the failures, what is wrong."""
    im, by, req = merged["images"], merged["bytes"], merged["requests"]
    n = merged["shard_count"]
    parts = (
        f"{n - len(merged['missing_shards'])} of {n} shards"
        if n
        else f"{len(merged['shards'])} runs"
    )
    wall = merged["wall_seconds"]
    lines = [
        f"mirror: {im['total']} images from {parts}: {im['copied']} copied, "
        f"{im['up_to_date']} up to date, {im['failed']} failed",
        f"bytes: {human_bytes(by['copied'])} copied; over the wire "
        f"{human_bytes(by['received'])} received, {human_bytes(by['sent'])} sent; avoided "
        f"{human_bytes(by['avoided'])} already at the destination ({by['layers_avoided']} "
        f"layers found there, {im['up_to_date']} images up to date), {by['mounts']} blobs "
        "mounted",
        f"requests: {req['total']}, {req['retries']} retries, {req['throttled']} throttled (429)",
        f"time: slowest shard {wall['slowest_shard']:.1f} s, all shards "
        f"{wall['all_shards']:.1f} s; from {merged['started_at'] or '?'} to "
        f"{merged['finished_at'] or '?'}",
        "",
        f"{'shard':<7} {'host':<24} {'finished':<20} {'wall s':>8} {'copied':>6} "
        f"{'current':>7} {'failed':>6} {'MB':>9} {'peak MB':>8}",
    ]
    for s in merged["shards"]:
        shard = s["shard"]
        label = f"{shard['index']}/{shard['count']}" if shard else "-"
        host = str(s["hostname"] or "?")[:24]
        lines.append(
            f"{label:<7} {host:<24} {str(s['finished_at'] or '?'):<20} "
            f"{s['wall_seconds']:>8.1f} {s['images']['copied']:>6} "
            f"{s['images']['up_to_date']:>7} {s['images']['failed']:>6} "
            f"{s['bytes'] / 1e6:>9.1f} {s['peak_pss_total'] / 1e6:>8.1f}"
        )
    if merged["failed"]:
        lines += ["", "failed images:"]
        lines += [
            f"  {f['source']}: {f['reason']} ({f['stage']}, shard {f['shard']})"
            for f in merged["failed"]
        ]
    for k in merged["missing_shards"]:
        lines.append(
            f"missing: shard {k}/{n} (no stats file given for it: still running, "
            "failed before it finished, or not copied here)"
        )
    for d in merged["duplicates"]:
        lines.append(f"duplicate: {d['image']} in {d['files'][0]} and {d['files'][1]}")
    return "\n".join(lines)
