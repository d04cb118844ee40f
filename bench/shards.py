"""A sharded mirror, measured per shard: what docs/bulk.md sizes the Kubernetes Job with.

N processes of `occystrap process --shard K/N` run at once, as the Job's N pods do, on the
bench's bulk set (30 images, each a 20 MiB layer on a shared 50 MiB base) from one loopback
registry into a fresh one; then the same again (the nightly re-run, nothing to copy). For
each shard: wall time, the peak PSS of its whole process tree (bench/measure.py, sampled
every 20 ms) and the peak size of its spool (--temp-dir), for each -J given. The container
adds no process of its own (occystrap is its entrypoint), so a pod's memory is this plus the
page cache of its spool, and its spool is what the pod's /tmp volume must hold.

    .venv/bin/python -m bench.shards [--shards 3] [-J 3,6] [-j 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading

from bench.harness import IMAGES, OURS, build_and_push
from bench.measure import run_measured
from tools.testregistry import TestRegistry


def tree_bytes(path: str) -> int:
    """Bytes of the files under `path`, each inode once (the spool hard-links shared blobs)."""
    seen: dict[int, int] = {}
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # renamed or removed meanwhile
            seen[st.st_ino] = st.st_size
    return sum(seen.values())


def run_shards(
    src: str, dest: str, shards: int, image_parallel: int, parallel: int, work: str, tag: str
) -> list[dict[str, object]]:
    """Start every shard at once; per shard, in shard order: wall s, peak PSS and peak spool
    bytes (its --temp-dir, sampled every 50 ms), images and bytes from its stats file."""
    out: list[dict[str, object]] = [{} for _ in range(shards)]
    spools = [os.path.join(work, f"{tag}-spool-{k}") for k in range(shards)]
    peaks = [0] * shards
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for k, spool in enumerate(spools):
                peaks[k] = max(peaks[k], tree_bytes(spool))

    def one(k: int) -> None:
        stats_file = os.path.join(work, f"{tag}-{k}.json")
        os.makedirs(spools[k])
        cmd = [
            OURS,
            "--insecure",
            "-q",
            "-J",
            str(image_parallel),
            "-j",
            str(parallel),
            "--temp-dir",
            spools[k],
            "--stats-file",
            stats_file,
            "process",
            "--shard",
            f"{k}/{shards}",
            f"registry://{src}/*:1.0",
            f"registry://{dest}/mirror",
        ]
        r = run_measured(cmd, timeout=1800)
        if r.exit_code != 0:
            raise RuntimeError(f"shard {k}/{shards} exited {r.exit_code}: {r.stderr}")
        with open(stats_file) as f:
            doc = json.load(f)
        out[k] = {
            "wall": round(r.wall, 2),
            "peak_pss": r.peak_pss,
            "images": doc["images"],
            "bytes": doc["bytes"],
        }

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(shards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    sampler.join()
    for k, shard in enumerate(out):
        shard["peak_spool"] = peaks[k]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.shards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("-J", "--image-parallel", default="3,6", help="comma-separated -J values")
    ap.add_argument("-j", "--parallel", type=int, default=4)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    spec = IMAGES["bulk"]
    results: dict[str, object] = {
        "shards": args.shards,
        "parallel": args.parallel,
        "set": spec.about,
        "runs": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="occystrap-bench-shards-") as work,
        TestRegistry() as source,
    ):
        build_and_push(spec, source, os.path.join(work, "images"))
        src = f"{source.host}/{spec.repo}"
        print(
            f"{'-J':>3} {'run':<6} {'shard':>5} {'images':>6} {'MB':>7} {'wall s':>7} "
            f"{'peak PSS MB':>11} {'peak spool MB':>13}"
        )
        for j in (int(x) for x in args.image_parallel.split(",")):
            with TestRegistry() as dest:
                for run in ("copy", "re-run"):
                    shards = run_shards(
                        src, dest.host, args.shards, j, args.parallel, work, f"j{j}-{run}"
                    )
                    for k, s in enumerate(shards):
                        images = s["images"]["done"]  # type: ignore[index]
                        print(
                            f"{j:>3} {run:<6} {k:>5} {images:>6} "
                            f"{s['bytes'] / 1e6:>7.1f} {s['wall']:>7.2f} "  # type: ignore[operator]
                            f"{s['peak_pss'] / 1e6:>11.1f} "  # type: ignore[operator]
                            f"{s['peak_spool'] / 1e6:>13.1f}"
                        )  # type: ignore[operator]
                    results["runs"].append({"J": j, "run": run, "shards": shards})  # type: ignore[union-attr]
                    walls = [float(s["wall"]) for s in shards]  # type: ignore[arg-type]
                    print(
                        f"    {run}: slowest shard {max(walls):.2f} s, median "
                        f"{statistics.median(walls):.2f} s"
                    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
