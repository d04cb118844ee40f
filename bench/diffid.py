"""What checking every layer's diff_id costs on a local source: `python -m bench.diffid`.

Issue 14 asks whether occystrap should check the config's `rootfs.diff_ids` by default when a
local source (tar://, oci://, dir://, docker://) has compressed layers, where the blob digest
says nothing about the uncompressed content. This builds the benchmark's 1 GiB image (10
layers, half compressible, gzip; the same spec as `bench/specs.py`'s `1g`) as a Docker
containerd-store archive (compressed layers, `tools/archivebuilder.py`) and as an OCI layout,
then times local copies without and with `--verify-full`, interleaved, and prints the median
of each and the difference. Everything stays on the local disk; no network.
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
import time

from bench.measure import run_measured
from occystrap.layers import codec as layerio
from tools import archivebuilder as ab

LAYERS = [(1 << 30) // 10] * 10  # the harness's 1g image


def _occystrap() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "occystrap")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "occystrap"]


def prepare(work: str) -> tuple[str, str]:
    """The archive and the OCI layout of the 1 GiB image, built once in `work`."""
    archive = os.path.join(work, "app1g.tar")
    layout = os.path.join(work, "layout")
    if not os.path.exists(archive):
        image = ab.make_image(
            os.path.join(work, "build"),
            1000,
            LAYERS,
            compression="gzip",
            compressible=0.5,
            special_entries=False,
            tags=["bench/app1g:1.0"],
        )
        ab.write_archive(
            archive, ab.containerd_members([image], "bench/app1g:1.0", attestations=False)
        )
        shutil.rmtree(os.path.join(work, "build"))
    if not os.path.exists(layout):
        subprocess.run(
            [*_occystrap(), "-q", "process", f"tar://{archive}", f"oci://{layout}"], check=True
        )
    return archive, layout


def measure(work: str, runs: int) -> dict[tuple[str, bool], list[float]] | None:
    """Wall seconds per (workflow, --verify-full): one untimed round, then `runs`."""
    archive, layout = prepare(work)
    workflows = {
        "tar (containerd, gzip) -> oci": (f"tar://{archive}", "oci://{out}"),
        "oci -> tar": (f"oci://{layout}", "tar://{out}.tar"),
        "oci -> oci": (f"oci://{layout}", "oci://{out}"),
    }
    times: dict[tuple[str, bool], list[float]] = {}
    for run in range(runs + 1):  # the first round warms the page cache, untimed
        for name, (src, dst) in workflows.items():
            for full in (False, True):
                out = os.path.join(work, f"out-{run}-{full}")
                result = run_measured(
                    [
                        *_occystrap(),
                        "-q",
                        *(["--verify-full"] if full else []),
                        "process",
                        src,
                        dst.format(out=out),
                    ]
                )
                shutil.rmtree(out, ignore_errors=True)
                if os.path.exists(out + ".tar"):
                    os.unlink(out + ".tar")
                if result.exit_code != 0:
                    print(result.stderr, file=sys.stderr)
                    return None
                if run:
                    times.setdefault((name, full), []).append(result.wall)
    return times


def cpu_cost(layout: str) -> tuple[float, int]:
    """CPU seconds to decompress and hash every layer of the layout's image once (what
    --verify-full adds, whatever the overlap with other stages), and the bytes read."""
    index = json.loads(open(os.path.join(layout, "index.json")).read())
    blobs = os.path.join(layout, "blobs", "sha256")
    manifest = json.loads(open(os.path.join(blobs, index["manifests"][0]["digest"][7:])).read())
    started, total = time.process_time(), 0
    for layer in manifest["layers"]:
        path = os.path.join(blobs, layer["digest"][7:])
        layerio.decompress_file(path, "gzip")
        total += os.path.getsize(path)
    return time.process_time() - started, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.diffid", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="kept when given (reused if built)")
    args = parser.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="occystrap-diffid-")
    os.makedirs(work, exist_ok=True)
    try:
        times = measure(work, args.runs)
        cpu, size = cpu_cost(os.path.join(work, "layout"))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if times is None:
        return 1
    print(f"{'workflow':34} {'default':>9} {'--verify-full':>14} {'extra':>8}")
    for name in dict.fromkeys(name for name, _ in times):
        base = statistics.median(times[(name, False)])
        full = statistics.median(times[(name, True)])
        print(f"{name:34} {base:8.2f}s {full:13.2f}s {100 * (full / base - 1):7.0f}%")
    print(
        f"decompressing and hashing the {size / 2**20:.0f} MiB of gzip layers once: "
        f"{cpu:.2f} CPU seconds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
