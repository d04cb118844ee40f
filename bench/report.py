"""Flattening one run's JSON into rows and tables, for stdout and for docs/benchmarks.md."""

from __future__ import annotations

from bench.specs import RERUNS


def _ratio(entry: dict, tool: str, peer: str) -> float | None:
    tools = entry["tools"]
    a, b = tools.get(tool, {}).get("median"), tools.get(peer, {}).get("median")
    return a / b if a and b else None


def rows(doc: dict[str, object]) -> list[dict[str, object]]:
    """One flat row per image × workflow × tool, for both the stdout table and the docs.
    ``image`` is the set's key, ``KEY@wan`` for the WAN profile."""
    out = []
    for key, img in doc["images"].items():  # type: ignore[union-attr]
        lim = img.get("limits", {})
        for wf, entry in img["workflows"].items():
            if wf == "tar2reg":  # what it reads and must gzip
                nbytes = lim.get("unpacked_bytes") or lim.get("tarball_bytes", 0)
            elif wf == "registry" and img["platforms"] > 1:
                nbytes = lim.get("all_bytes", 0)
            else:
                nbytes = lim.get("packed_bytes", 0)
            limit = lim.get("workflows", {}).get(wf)
            for tool, r in entry["tools"].items():
                med = r.get("median")
                row = {
                    "image": key,
                    "workflow": wf,
                    "tool": tool,
                    "median": med,
                    "min": r.get("min"),
                    "max": r.get("max"),
                    "mb_s": nbytes / 1e6 / med if med and wf not in RERUNS else None,
                    "pss_mb": r["max_pss"] / 1e6 if med else None,
                    "rss_mb": r["max_rss"] / 1e6 if med else None,
                    "vs_skopeo": None,
                    "vs_orig": None,
                    "limit": None,
                    "eff": None,
                    "failed": len(r.get("failures", [])),
                }
                if tool == "occystrap":
                    row["vs_skopeo"] = _ratio(entry, tool, "skopeo")
                    row["vs_orig"] = _ratio(entry, tool, "occystrap-0.4.17")
                    row["limit"] = limit
                    row["eff"] = limit / med if limit and med else None
                out.append(row)
    return out


def f(value: object, fmt: str) -> str:
    """``value`` formatted, or an en dash when there is none."""
    return "–" if value is None else format(value, fmt)


def mb_s(value: float | None, width: int = 0) -> str:
    """MB/s: whole numbers, but two decimals below 10 (a set of tiny images moves little)."""
    if value is None:
        return f"{'–':>{width}}" if width else "–"
    return format(value, f"{width}.{0 if value >= 10 else 2}f")


def print_table(doc: dict[str, object]) -> None:
    head = (
        f"{'image':<11} {'workflow':<11} {'tool':<17} {'median s':>8} {'min–max s':>13} "
        f"{'MB/s':>6} {'PSS MB':>7} {'RSS MB':>7} {'/skopeo':>7} {'/0.4.17':>7} "
        f"{'limit s':>7} {'eff':>5}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows(doc):
        span = f"{r['min']:.2f}–{r['max']:.2f}" if r["median"] else f"failed ×{r['failed']}"
        print(
            f"{r['image']:<11} {r['workflow']:<11} {r['tool']:<17} "
            f"{f(r['median'], '8.2f'):>8} {span:>13} {mb_s(r['mb_s'], 6)} "
            f"{f(r['pss_mb'], '7.1f'):>7} {f(r['rss_mb'], '7.1f'):>7} "
            f"{f(r['vs_skopeo'], '7.2f'):>7} {f(r['vs_orig'], '7.2f'):>7} "
            f"{f(r['limit'], '7.2f'):>7} {f(r['eff'], '5.2f'):>5}"
        )
    for line in fixed_table(doc) + fetch_cpu_table(doc):
        print(line)


FIXED_MEASURES = [
    ("version", "wall", "`--version`, wall s"),
    ("help", "wall", "`--help`, wall s"),
    ("oci", "wall", "small → oci://, wall s"),
    ("oci", "first_request", "small → oci://, start → first request s"),
    ("oci", "last_to_exit", "small → oci://, last file write → exit s"),
    ("noop", "wall", "small re-run into a registry, wall s"),
    ("noop", "first_request", "small re-run, start → first request s"),
    ("noop", "last_to_exit", "small re-run, last byte on the wire → exit s"),
]


def fixed_costs(doc: dict[str, object]) -> dict[str, object]:
    """The fixed-cost measures of the run (bench/fixedcost.py), or {}."""
    for img in doc["images"].values():  # type: ignore[union-attr]
        if img.get("fixed"):
            return img["fixed"]
    return {}


def fixed_median(
    doc: dict[str, object], wf: str, measure: str, tool: str = "occystrap"
) -> float | None:
    return (fixed_costs(doc).get(wf, {}).get(tool, {}).get(measure) or {}).get("median")


def fixed_table(doc: dict[str, object]) -> list[str]:
    """Markdown: each fixed-cost measure, median (min–max) per tool."""
    fixed = fixed_costs(doc)
    if not fixed:
        return []
    tools = sorted({t for wf in fixed.values() for t in wf}, key=lambda t: (t != "occystrap", t))
    lines = ["", "| measure | " + " | ".join(tools) + " |", "| --- |" + " ---: |" * len(tools)]
    for wf, measure, title in FIXED_MEASURES:
        cells = []
        for t in tools:
            m = fixed.get(wf, {}).get(t, {}).get(measure)
            cells.append(
                f"{m['median']:.3f} ({m['min']:.3f}–{m['max']:.3f})"
                if m and m.get("median") is not None
                else "–"
            )
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def fetch_cpu(doc: dict[str, object]) -> list[dict[str, object]]:
    """The fetch stage's CPU per MB received in each ``--stats-file`` run that moved at least
    50 MB, against sha256's cost per MB on this machine (issue 17): measured at the start of
    the run the image comes from (an image's own ``sha256_ms_per_mb`` in a page merged from
    several runs; it moves by ±10% from one run to the next here)."""
    machine_sha = doc["machine"].get("sha256_ms_per_mb")  # type: ignore[union-attr]
    out = []
    for key, img in doc["images"].items():  # type: ignore[union-attr]
        sha = img.get("sha256_ms_per_mb", machine_sha)
        for wf, entry in img["workflows"].items():
            for s in (entry.get("stats") or {}).get("stages", []):
                got = s.get("bytes_received") or s.get("bytes_out") or 0
                if s.get("stage") != "fetch" or got < 50e6 or s.get("cpu_seconds") is None:
                    continue
                ms = s["cpu_seconds"] * 1000 / (got / 1e6)
                out.append(
                    {
                        "image": key,
                        "workflow": wf,
                        "cpu_s": s["cpu_seconds"],
                        "mb": got / 1e6,
                        "ms_per_mb": ms,
                        "sha256_ms_per_mb": sha,
                        "x_sha256": ms / sha if sha else None,
                    }
                )
    return out


def fetch_cpu_table(doc: dict[str, object]) -> list[str]:
    got = fetch_cpu(doc)
    if not got:
        return []
    lines = [
        "",
        "| image | workflow | fetch CPU s | MB received | ms/MB | sha256 ms/MB | × sha256 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in got:
        lines.append(
            f"| {r['image']} | {r['workflow']} | {r['cpu_s']:.2f} | {r['mb']:.0f} | "
            f"{r['ms_per_mb']:.2f} | {f(r['sha256_ms_per_mb'], '.2f')} | "
            f"{f(r['x_sha256'], '.1f')} |"
        )
    return lines


def bottleneck(doc: dict[str, object], image: str, workflow: str) -> str:
    """Our own verdict (``--stats-file``'s bottleneck) for one workflow, or "" if none."""
    img = doc["images"].get(image, {})  # type: ignore[union-attr]
    stats = img.get("workflows", {}).get(workflow, {}).get("stats") or {}
    b = stats.get("bottleneck") or {}
    if not b:
        return ""
    busy = sorted(stats.get("stages", []), key=lambda x: -(x.get("busy_seconds") or 0))
    split = "; ".join(
        f"{x['stage']} busy {x.get('busy_seconds') or 0:.2f} s, waiting for input "
        f"{x.get('wait_in_seconds') or 0:.2f} s"
        for x in busy[:2]
    )
    return f"{b.get('stage') or 'none'} ({b.get('kind') or '?'}): {b.get('reason', '')}; {split}"


def stats_line(wf: str, s: dict[str, object]) -> str:
    """One docs bullet for a ``--stats-file`` run: busiest stages, verdict, per-image spread."""
    stages = sorted(s["stages"], key=lambda x: -(x.get("busy_seconds") or 0))  # type: ignore
    busy = ", ".join(f"{x['stage']} {x.get('busy_seconds') or 0:.2f}" for x in stages[:3])
    verdict = (s.get("bottleneck") or {}).get("reason")  # type: ignore[union-attr]
    line = f"- {wf}: wall {s.get('wall_seconds') or 0:.2f} s; {busy}"
    if verdict:
        line += f"; verdict: {verdict}"
    moved = s.get("transfer")
    if wf == "bulk-recode" and isinstance(moved, dict):
        line += (
            f"; blobs: {moved.get('bytes_received', 0) / 1e6:.1f} MB received, "
            f"{moved.get('bytes_sent', 0) / 1e6:.1f} MB sent, {moved.get('mounts', 0)} "
            "mounted"
        )
    per = s.get("per_image_seconds")
    if per:
        reqs = s.get("requests")
        line += (
            f"; {per['n']} image results, each {per['median']:.2f} s median, "  # type: ignore
            f"{per['p90']:.2f} p90, {per['max']:.2f} max"
        )  # type: ignore[index]
        if reqs:
            line += f"; {reqs} requests ({reqs / per['n']:.1f} per image)"  # type: ignore
    return line
