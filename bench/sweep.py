"""Sweep occystrap's own -j / -J settings on small images (what tools/benchmark.sh runs).

    tools/benchmark.sh                         # start a local registry, TSV on stdout
    tools/benchmark.sh --registry 127.0.0.1:5000 --runs 5 --json

The side-by-side harness (``python -m bench``) answers "are we faster than the others"; this
answers "which settings should a user pick", so it only runs us, on images small enough that
the whole grid takes a few minutes. ``-j`` matters for every copy (blob downloads at once);
``-J`` only when a source holds several images, so the -J grid runs on an OCI layout of
several images (made here from the registry) and single-image workflows record J=1.
Columns: workflow, j, J, wall_s (median of --runs), exit_code (the first non-zero, else 0),
peak_mem_mb (the largest peak PSS of the process tree over the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.measure import run_measured  # noqa: E402
from tools.imagebuilder import build_image, push_image  # noqa: E402
from tools.testregistry import TestRegistry  # noqa: E402

MiB = 1 << 20
OURS = os.path.join(ROOT, ".venv", "bin", "occystrap")
IMAGES = 6  # enough for -J 6 to have six images in flight
LAYERS = [12 * MiB, 10 * MiB, 8 * MiB, 6 * MiB, 4 * MiB, 2 * MiB]  # ~21 MB gzipped


def push_images(registry_url: str, work: str) -> list[str]:
    """Push IMAGES small images sharing their base layer (as real fleets do); returns refs."""
    refs = []
    for i in range(IMAGES):
        build = os.path.join(work, f"build-{i}")
        image = build_image(
            build,
            500 + i,
            LAYERS,
            compressible=0.5,
            special_entries=False,
            shared_base_key="sweep-base",
        )
        push_image(registry_url, f"sweep/app{i}", "1.0", image)
        shutil.rmtree(build, ignore_errors=True)
        refs.append(f"sweep/app{i}:1.0")
    return refs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/benchmark.sh", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--registry",
        default=None,
        metavar="HOST:PORT",
        help="source registry on loopback (default: start a local test registry); "
        "the sweep pushes its images there as sweep/app0..5:1.0",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs per setting; wall_s is the median")
    ap.add_argument("--json", action="store_true", help="JSON lines instead of TSV")
    ap.add_argument("--jobs", default="1,4,8,16", help="-j values")
    ap.add_argument("--images-parallel", default="1,3,6", help="-J values")
    args = ap.parse_args(argv)
    if args.registry and not args.registry.startswith("127.0.0.1:"):
        ap.error("--registry must be a loopback address (127.0.0.1:PORT)")
    js = [int(x) for x in args.jobs.split(",")]
    big_js = [int(x) for x in args.images_parallel.split(",")]

    work = tempfile.mkdtemp(prefix="occystrap-sweep-")
    local: TestRegistry | None = None
    try:
        if args.registry:
            host = args.registry
        else:
            local = TestRegistry().start()
            host = local.host
        refs = push_images(f"http://{host}", work)
        # The multi-image source: an OCI layout holding every image, built by us (untimed).
        multi = os.path.join(work, "multi")
        for ref in refs:
            subprocess.run(
                [OURS, "--insecure", "-q", "process", f"registry://{host}/{ref}", f"oci://{multi}"],
                check=True,
            )
        src = f"registry://{host}/{refs[0]}"
        cases: list[tuple[str, str, str, list[int]]] = [
            ("registry-to-tar", src, "tar://{out}/app.tar", [1]),
            ("registry-to-oci", src, "oci://{out}/layout", [1]),
            ("registry-to-dir", src, "dir://{out}/dir", [1]),
            ("registry-to-registry", src, "registry://{dest}/copy/app0:1.0", [1]),
            ("oci6-to-oci", f"oci://{multi}", "oci://{out}/layout", big_js),
            ("oci6-to-tar", f"oci://{multi}", "tar://{out}/all.tar", big_js),
        ]
        if not args.json:
            print("workflow\tj\tJ\twall_s\texit_code\tpeak_mem_mb", flush=True)
        for name, source, target, jjs in cases:
            for big_j in jjs:
                for j in js:
                    walls, peaks, code = [], [], 0
                    for _ in range(args.runs):
                        out = os.path.join(work, "out")
                        shutil.rmtree(out, ignore_errors=True)
                        os.makedirs(out)
                        dest = TestRegistry().start() if "{dest}" in target else None
                        try:
                            dst = target.format(out=out, dest=dest.host if dest else "")
                            r = run_measured(
                                [
                                    OURS,
                                    "--insecure",
                                    "-q",
                                    "-j",
                                    str(j),
                                    "-J",
                                    str(big_j),
                                    "process",
                                    source,
                                    dst,
                                ]
                            )
                        finally:
                            if dest:
                                dest.stop()
                            shutil.rmtree(out, ignore_errors=True)
                        walls.append(r.wall)
                        peaks.append(r.peak_pss)
                        if r.exit_code and not code:
                            code = r.exit_code
                            print(r.stderr[-400:], file=sys.stderr)
                    row = {
                        "workflow": name,
                        "j": j,
                        "J": big_j,
                        "wall_s": round(statistics.median(walls), 3),
                        "exit_code": code,
                        "peak_mem_mb": round(max(peaks) / 1e6, 1),
                    }
                    if args.json:
                        print(json.dumps(row), flush=True)
                    else:
                        print("\t".join(str(v) for v in row.values()), flush=True)
    finally:
        if local:
            local.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
