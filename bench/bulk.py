"""Bulk mirror benchmark: 30 images of ~20 MB sharing a 50 MB base, registry → registry,
against `skopeo sync`, then the re-run with nothing to copy. Fresh destination registry per
run (skopeo would otherwise mount blobs it remembers from an earlier run).

    .venv/bin/python -m bench.bulk [--images 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.copy import settle, timed  # noqa: E402
from tools.imagebuilder import build_image, push_image  # noqa: E402
from tools.testregistry import TestRegistry  # noqa: E402

OCCYSTRAP = os.path.join(ROOT, ".venv", "bin", "occystrap")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="occystrap-bulk-")
    results: dict[str, list[tuple[float, int]]] = {}
    with TestRegistry() as src:
        for i in range(args.images):
            image = build_image(os.path.join(work, str(i)), seed=7000 + i,
                                layer_sizes=[50 * 2**20, 20 * 2**20], special_entries=False,
                                shared_base_key="bulk-base", compressible=0.5)
            push_image(src.url, f"bulk/app-{i:02d}", "1.0", image)
        spec = os.path.join(work, "sync.yaml")
        with open(spec, "w") as f:  # skopeo sync's own list of what to copy, one process
            f.write(f"{src.host}:\n  tls-verify: false\n  images:\n")
            for i in range(args.images):
                f.write(f"    bulk/app-{i:02d}: ['1.0']\n")
        for _ in range(args.runs):
            for tool in ("skopeo", "occystrap"):
                with TestRegistry() as dst:
                    if tool == "skopeo":
                        cmd = ["skopeo", "sync", "--src", "yaml", "--dest", "docker",
                               "--dest-tls-verify=false", spec, f"{dst.host}/mirror"]
                    else:
                        cmd = [OCCYSTRAP, "--insecure", "-q", "-J", "6", "-j", "8", "process",
                               f"registry://{src.host}/bulk/*:1.0",
                               f"registry://{dst.host}/mirror"]
                    first = timed(cmd)
                    again = timed(cmd)  # nothing to copy
                    results.setdefault(tool, []).append(first)
                    results.setdefault(f"{tool} re-run", []).append(again)
                settle()
    print(f"\n{args.images} images, 20 MiB each on a shared 50 MiB base; {args.runs} runs")
    print(f"{'run':<18} {'median s':>9} {'min s':>7} {'max s':>7} {'peak PSS MB':>12}")
    for name, rows in results.items():
        times = [t for t, _ in rows]
        print(f"{name:<18} {statistics.median(times):>9.2f} {min(times):>7.2f} "
              f"{max(times):>7.2f} {max(p for _, p in rows) / 1e6:>12.1f}")
    for kind in ("", " re-run"):
        ours = statistics.median(t for t, _ in results[f"occystrap{kind}"])
        theirs = statistics.median(t for t, _ in results[f"skopeo{kind}"])
        print(f"ratio{kind or ''}: occystrap / skopeo sync = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
