"""occystrap against skopeo and the original occystrap 0.4.17, side by side on one machine.

    bench/run.sh                                  # sets up, then the default sets, 5 runs each
    bench/run.sh --images 1g --runs 3 --write-docs
    .venv/bin/python -m bench --images 100m --tools occystrap,skopeo --workflows tar,oci
    .venv/bin/python -m bench --images bulk --workflows bulk,bulk-noop --runs 3
    .venv/bin/python -m bench --images bulk100,bulk1k --tools occystrap,skopeo --runs 1
    .venv/bin/python -m bench --images small --workflows fixed --runs 5
    .venv/bin/python -m bench --images 1g,bulk --profiles loopback,wan --runs 3

Performance claims must come from something anyone can rerun, comparing us with what users
would pick instead, in the same run (machines drift: a number from yesterday is not a
baseline). So this starts its own loopback registry, pushes deterministic images, and for each
workflow runs every tool that can do it, interleaved (A B C A B C …) after a warm-up round, each
against a fresh destination (a new registry for pushes, so nobody mounts or skips blobs left by
an earlier run). It reports medians, min–max, ratios of medians, peak memory of the whole
process tree, and the physical limit of the workflow on this machine (see bench/limits.py).
Results go to bench/results/bench-<time>.json; ``--write-docs`` regenerates docs/benchmarks.md.

The pieces: bench/specs.py (image sets, workflows, command lines), bench/images.py (building,
pushing, the bulk1k cache), bench/sources.py (source registries, the WAN profile),
bench/runner.py (limits and runs), bench/fixedcost.py (start-up and exit costs),
bench/wanproxy.py (the latency/bandwidth proxy), bench/report.py, bench/targets.py and
bench/docs.py (tables, targets, docs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import limits  # noqa: E402
from bench.docs import write_docs  # noqa: E402
from bench.report import print_table  # noqa: E402
from bench.runner import bench_image  # noqa: E402
from bench.sources import Sources, Wan  # noqa: E402
from bench.specs import (  # noqa: E402
    DEFAULT_IMAGES,
    IMAGES,
    ORIG,
    OURS,
    PROFILES,
    TOOLS,
    WORKFLOWS,
)

RESULTS = os.path.join(ROOT, "bench", "results")


def _git(*argv: str) -> str:
    return subprocess.run(
        ["git", "-C", ROOT, *argv], capture_output=True, text=True, check=True
    ).stdout.strip()


def snapshot(rev: str, work: str) -> tuple[dict[str, str], str]:
    """Our package as of ``rev``, extracted under ``work`` and put first on PYTHONPATH (ahead of
    the venv's editable install), so edits made while the benchmark runs do not leak into it."""
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    dest = os.path.join(work, "ours-src")
    os.makedirs(dest)
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", commit, "occystrap"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    # Byte-compiled, as an installed package is (PYTHONDONTWRITEBYTECODE would otherwise make
    # every timed run compile the whole package first).
    subprocess.run(
        [
            os.path.join(ROOT, ".venv", "bin", "python"),
            "-m",
            "compileall",
            "-q",
            os.path.join(dest, "occystrap"),
        ],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ, PYTHONPATH=dest)
    where = subprocess.run(
        [
            os.path.join(ROOT, ".venv", "bin", "python"),
            "-c",
            "import occystrap; print(occystrap.__file__)",
        ],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not where.startswith(dest):
        raise SystemExit(f"--commit: occystrap still imports from {where}")
    return env, f"commit {commit[:12]} (`--commit {rev}`)"


def machine(env: dict[str, str] | None = None) -> dict[str, object]:
    """What the numbers were measured on: they mean nothing without it."""

    def version(cmd: list[str]) -> str:
        try:
            return (
                subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
                .stdout.strip()
                .splitlines()[0]
            )
        except (OSError, IndexError, subprocess.SubprocessError):
            return "missing"

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import psutil

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "skopeo": version(["skopeo", "--version"]),
        "occystrap": version([OURS, "--version"]) if os.path.exists(OURS) else "missing",
        "occystrap_orig": version(
            [
                os.path.join(os.path.dirname(ORIG), "python"),
                "-I",
                "-c",
                "import importlib.metadata as m;print(m.version('occystrap'))",
            ]
        ),
        "registry": version(["/usr/bin/docker-registry", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--images",
        default=",".join(DEFAULT_IMAGES),
        help=f"of {','.join(IMAGES)} (default {','.join(DEFAULT_IMAGES)})",
    )
    ap.add_argument("--workflows", default=",".join(WORKFLOWS), help=f"of {','.join(WORKFLOWS)}")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"of {','.join(TOOLS)}")
    ap.add_argument(
        "--profiles",
        default="loopback",
        help=f"of {','.join(PROFILES)} (default loopback; wan: the source over TLS "
        "behind bench/wanproxy.py)",
    )
    ap.add_argument(
        "--wan-delay-ms", type=float, default=25.0, help="WAN profile: one-way delay (default 25)"
    )
    ap.add_argument(
        "--wan-rate-mb-s",
        type=float,
        default=100.0,
        help="WAN profile: MB/s each way, shared by all connections (default 100)",
    )
    ap.add_argument(
        "--wan-dest",
        action="store_true",
        help="WAN profile: fresh destination registries behind a link of their own "
        "too (default: only the source is remote)",
    )
    ap.add_argument("--runs", type=int, default=5, help="timed runs per tool (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--no-limits", action="store_true", help="skip the physical limits")
    ap.add_argument("--no-stats", action="store_true", help="skip our --stats-file run")
    ap.add_argument("--write-docs", action="store_true", help="regenerate docs/benchmarks.md")
    ap.add_argument("--docs-from", metavar="JSON", help="only regenerate the docs from a result")
    ap.add_argument("--work", default=None, help="parent of the work dir (default: $TMPDIR)")
    ap.add_argument(
        "--commit",
        metavar="REV",
        default=None,
        help="run ours from this commit (git archive into the work dir, first on "
        "PYTHONPATH) instead of the working tree, which may be mid-edit",
    )
    ap.add_argument(
        "--note",
        default="",
        help="one line about this run for the docs' machine section (e.g. what else was running)",
    )
    ap.add_argument(
        "--analysis",
        metavar="MD",
        default=None,
        help="with --write-docs/--docs-from: hand-written markdown about the run, "
        "included verbatim",
    )
    args = ap.parse_args(argv)

    if args.docs_from:
        with open(args.docs_from) as f:
            doc = json.load(f)
        print_table(doc)
        write_docs(doc, os.path.abspath(args.docs_from), args.analysis)
        return 0
    tools = [t for t in args.tools.split(",") if t]
    for t in tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}")
    if "skopeo" in tools and not shutil.which("skopeo"):
        print("skopeo is missing (bench/run.sh installs it): skipping it", file=sys.stderr)
        tools.remove("skopeo")
    if "occystrap-0.4.17" in tools and not os.path.exists(ORIG):
        print(f"{ORIG} is missing (bench/run.sh installs it): skipping it", file=sys.stderr)
        tools.remove("occystrap-0.4.17")
    workflows = [w for w in args.workflows.split(",") if w]
    for w in workflows:
        if w not in WORKFLOWS:
            ap.error(f"unknown workflow {w!r}")
    for k in args.images.split(","):
        if k and k not in IMAGES:
            ap.error(f"unknown image {k!r}")
    specs = [IMAGES[k] for k in args.images.split(",") if k]
    profiles = [p for p in args.profiles.split(",") if p]
    for p in profiles:
        if p not in PROFILES:
            ap.error(f"unknown profile {p!r}")
    wan = Wan(args.wan_delay_ms, args.wan_rate_mb_s, args.wan_dest)

    work = tempfile.mkdtemp(prefix="occystrap-bench-", dir=args.work)
    env, source = None, "the working tree (" + _git("describe", "--always", "--dirty") + ")"
    if args.commit:
        env, source = snapshot(args.commit, work)
    mach = machine(env)
    mach["occystrap_source"] = source
    mach["sha256_ms_per_mb"] = limits.sha256_ms_per_mb()
    doc: dict[str, object] = {
        "schema": "occystrap.bench/2",
        "machine": mach,
        "args": vars(args),
        "images": {},
    }
    if "wan" in profiles:
        doc["wan"] = {
            "delay_ms": wan.delay_ms,
            "rate_mb_s": wan.rate_mb_s,
            "dest": wan.dest,
            "about": wan.describe(),
        }
    sources = Sources(work, wan)
    try:
        for spec in specs:
            doc["images"].update(
                bench_image(  # type: ignore[union-attr]
                    spec, sources, tools, workflows, profiles, args, work, env
                )
            )
    finally:
        sources.stop()
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(doc)
    print(f"\nresults: {path}")
    if args.write_docs:
        write_docs(doc, path, args.analysis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
