"""The issues' targets, checked against one run: met, missed (with the stage our own
``--stats-file`` blamed) or not measured (the run did not include that image or workflow)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report import bottleneck, f, fetch_cpu, fixed_median, rows
from bench.specs import SINGLE_WORKFLOWS, WORKFLOWS


@dataclass(frozen=True)
class Check:
    """One target: ``value op goal`` (op is ≤ or <); ``image``/``workflow`` name the run
    whose bottleneck explains a miss ("" when no single run does)."""

    what: str
    value: float | None
    op: str
    goal: float
    image: str = ""
    workflow: str = ""

    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.goal if self.op == "≤" else self.value < self.goal


def _found(doc: dict[str, object]) -> dict[tuple[str, str, str], dict[str, object]]:
    return {(r["image"], r["workflow"], r["tool"]): r for r in rows(doc)}  # type: ignore


def _get(found: dict, image: str, wf: str, field: str) -> float | None:
    return found.get((image, wf, "occystrap"), {}).get(field)


def _vs(found: dict, image: str, wf: str, goal: float, peer: str = "skopeo") -> Check:
    return Check(
        f"{image} {wf}: ours / {peer}", _get(found, image, wf, "vs_skopeo"), "≤", goal, image, wf
    )


def _max(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return max(got) if got else None


def _pss(found: dict, images: set[str], workflows: list[str] | None = None) -> float | None:
    return _max(
        [
            r["pss_mb"]
            for (i, w, t), r in found.items()
            if t == "occystrap" and i in images and (workflows is None or w in workflows)
        ]
    )


def issue8(doc: dict[str, object]) -> list[Check]:
    """Issue 8: the 1 GiB image and the 30-image bulk set."""
    found = _found(doc)
    checks = [
        _vs(found, "1g", wf, goal) for wf, goal in (("oci", 0.8), ("tar", 0.5), ("registry", 0.8))
    ]
    checks.append(
        Check("1g noop re-run (s)", _get(found, "1g", "noop", "median"), "<", 1.0, "1g", "noop")
    )
    checks.append(
        Check(
            "bulk mirror: ours / skopeo sync",
            _get(found, "bulk", "bulk", "vs_skopeo"),
            "≤",
            0.5,
            "bulk",
            "bulk",
        )
    )
    checks.append(
        Check(
            "bulk re-run, nothing to copy (s)",
            _get(found, "bulk", "bulk-noop", "median"),
            "<",
            1.0,
            "bulk",
            "bulk-noop",
        )
    )
    for wf in WORKFLOWS:
        ratio = _get(found, "1g", wf, "vs_orig")
        if ratio is not None:
            goal = 0.2 if wf == "registry" else 1.0
            checks.append(
                Check(f"1g {wf}: ours / 0.4.17", ratio, "≤" if goal < 1 else "<", goal, "1g", wf)
            )
    checks.append(
        Check("our peak PSS, whole tree, 1g and bulk (MB)", _pss(found, {"1g", "bulk"}), "≤", 150.0)
    )
    return checks


def issue16(doc: dict[str, object]) -> list[Check]:
    """Issue 16: the cost of a run (small copies, re-runs, 1,000 images, fixed costs)."""
    found = _found(doc)
    checks = [
        _vs(found, "small", "oci", 2.0),
        _vs(found, "small", "tar", 2.0),
        _vs(found, "small", "noop", 2.0),
        Check(
            "bulk bulk-noop: ours / skopeo sync",
            _get(found, "bulk", "bulk-noop", "vs_skopeo"),
            "≤",
            1.0,
            "bulk",
            "bulk-noop",
        ),
        Check(
            "bulk1k bulk: ours / skopeo sync",
            _get(found, "bulk1k", "bulk", "vs_skopeo"),
            "≤",
            0.5,
            "bulk1k",
            "bulk",
        ),
        Check(
            "bulk1k bulk-noop: ours / skopeo sync",
            _get(found, "bulk1k", "bulk-noop", "vs_skopeo"),
            "≤",
            0.5,
            "bulk1k",
            "bulk-noop",
        ),
        Check("bulk1k: our peak PSS, whole tree (MB)", _pss(found, {"bulk1k"}), "≤", 150.0),
    ]
    p100 = _get(found, "bulk100", "bulk", "pss_mb")
    p1k = _get(found, "bulk1k", "bulk", "pss_mb")
    checks.append(
        Check(
            "PSS flat: bulk mirror peak PSS, 1,000 / 100 images",
            p1k / p100 if p1k and p100 else None,
            "≤",
            1.1,
        )
    )
    for wf, measure, what, goal in (
        ("version", "wall", "`occystrap --version` (s)", 0.08),
        ("help", "wall", "`occystrap --help` (s)", 0.08),
        ("oci", "first_request", "small → oci: start → first request (s)", 0.15),
        ("noop", "first_request", "small re-run: start → first request (s)", 0.15),
        ("oci", "last_to_exit", "small → oci: last file write → exit (s)", 0.05),
        ("noop", "last_to_exit", "small re-run: last byte → exit (s)", 0.05),
    ):
        checks.append(Check(what, fixed_median(doc, wf, measure), "≤", goal))
    stats = (
        doc["images"]
        .get("bulk", {})
        .get("workflows", {})  # type: ignore[union-attr]
        .get("bulk-recode", {})
        .get("stats")
        or {}
    )
    moved = stats.get("transfer")
    checks.append(
        Check(
            "bulk-recode (--compression zstd --layer-cache, new prefix): blob MB received + sent",
            (moved.get("bytes_received", 0) + moved.get("bytes_sent", 0)) / 1e6 if moved else None,
            "≤",
            1.0,
            "bulk",
            "bulk-recode",
        )
    )
    singles = {i for (i, _, _) in found if "@" not in i and not i.startswith("bulk")}
    checks.append(
        Check(
            "single-image copy, our peak PSS (MB; dir, tar, oci, registry, noop)",
            _pss(found, singles, ["dir", "tar", "oci", "registry", "noop"]),
            "≤",
            50.0,
        )
    )
    return checks


def issue17(doc: dict[str, object]) -> list[Check]:
    """Issue 17: bytes per second (large images, fetch CPU, tarball push, WAN, memory)."""
    found = _found(doc)
    checks: list[Check] = []
    for image in ("1g", "2g"):
        checks.append(_vs(found, image, "registry", 0.6))
        upload = (
            doc["images"]
            .get(image, {})
            .get("limits", {})  # type: ignore[union-attr]
            .get("resources", {})
            .get("upload")
        )
        med = _get(found, image, "registry", "median")
        checks.append(
            Check(
                f"{image} registry: ours / upload limit",
                med / upload if med and upload else None,
                "≤",
                1.3,
                image,
                "registry",
            )
        )
        checks += [_vs(found, image, "oci", 0.6), _vs(found, image, "tar", 0.3)]
    cpu = [
        r for r in fetch_cpu(doc) if r["image"] in ("1g", "2g") and r["workflow"] in ("oci", "tar")
    ]
    worst = max(cpu, key=lambda r: r["x_sha256"] or 0, default=None)
    checks.append(
        Check(
            "fetch CPU per MB / sha256's (1g, 2g; oci, tar; worst)",
            worst["x_sha256"] if worst else None,
            "≤",
            2.0,  # type: ignore[arg-type]
            str(worst["image"]) if worst else "",
            str(worst["workflow"]) if worst else "",
        )
    )
    checks += [
        _vs(found, "1g", "tar2reg", 0.8),
        Check(
            "bulk bulk: ours / skopeo sync",
            _get(found, "bulk", "bulk", "vs_skopeo"),
            "≤",
            0.5,
            "bulk",
            "bulk",
        ),
        Check(
            "WAN: bulk bulk: ours / skopeo sync",
            _get(found, "bulk@wan", "bulk", "vs_skopeo"),
            "≤",
            0.5,
            "bulk@wan",
            "bulk",
        ),
    ]
    for wf in ("registry", "oci"):
        checks.append(
            Check(
                f"WAN: 1g {wf}: ours / skopeo",
                _get(found, "1g@wan", wf, "vs_skopeo"),
                "≤",
                0.8,
                "1g@wan",
                wf,
            )
        )
    checks.append(
        Check(
            "our peak PSS, whole tree, every image and profile (MB)",
            _pss(found, {i for (i, _, _) in found}),
            "≤",
            150.0,
        )
    )
    flat = [
        (_get(found, "2g", wf, "pss_mb") or 0) / p
        for wf in SINGLE_WORKFLOWS
        if (p := _get(found, "1g", wf, "pss_mb")) and _get(found, "2g", wf, "pss_mb")
    ]
    checks.append(
        Check(
            "PSS flat in image size: 2g / 1g, worst workflow", max(flat) if flat else None, "≤", 1.1
        )
    )
    return checks


ISSUES = [
    ("issue 8: the 1 GiB image and the bulk set", issue8),
    ("issue 16: the cost of a run", issue16),
    ("issue 17: bytes per second", issue17),
]


def targets(doc: dict[str, object]) -> list[str]:
    """Markdown: one table per issue; a miss names the stage our own statistics blamed."""
    lines = [
        "## Targets",
        "",
        "Checked against this run. A miss names the stage our own `--stats-file` run "
        "blamed (its bottleneck verdict, then the two busiest stages with their busy and "
        "waiting-for-input seconds); *not measured*: the run did not include that image, "
        "workflow or profile.",
        "",
    ]
    for title, make in ISSUES:
        lines += [
            f"### Targets of {title}",
            "",
            "| target | this run | | bottleneck when missed (ours, `--stats`) |",
            "| --- | ---: | --- | --- |",
        ]
        for c in make(doc):
            ok = c.met()
            verdict = "not measured" if ok is None else "met" if ok else "**missed**"
            why = bottleneck(doc, c.image, c.workflow) if ok is False and c.workflow else ""
            lines.append(
                f"| {c.what} {c.op} {c.goal:g} | {f(c.value, '.3g')} | {verdict} | {why} |"
            )
        lines.append("")
    return lines
