"""Copy benchmark: occystrap against skopeo on the same machine, same registry, same image.

    .venv/bin/python -m bench.copy --size 2G --runs 3
    .venv/bin/python -m bench.copy --size 100M,1G --runs 3 --only occystrap   # memory vs size

Starts a real registry on 127.0.0.1, pushes a deterministic incompressible image of SIZE in
10 layers, then times each scenario RUNS times (interleaved, so drift hits all alike) and
prints medians, ratios against the matching skopeo scenario, and peak memory: the largest sum
of PSS over the whole process tree at one sample (every 20 ms). Results also go to
bench/results/copy-<time>.json. Machines are noisy: read the ratios and medians.
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
from dataclasses import dataclass

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.imagebuilder import build_image, push_image  # noqa: E402
from tools.testregistry import TestRegistry  # noqa: E402

OCCYSTRAP = [os.path.join(ROOT, ".venv", "bin", "occystrap")]


@dataclass
class Scenario:
    name: str
    tool: str
    peer: str | None  # the scenario this one is compared with

    def command(self, src: str, out: str, other: str) -> list[str]:
        """`other`: a fresh repository in the second registry (HOST/NAME:TAG)."""
        if self.tool == "skopeo":
            dest = {
                "skopeo-oci": f"oci:{out}/layout:1.0",
                "skopeo-docker-archive": f"docker-archive:{out}/app.tar:app:1.0",
                "skopeo-registry": f"docker://{other}",
            }[self.name]
            return [
                "skopeo",
                "copy",
                "-q",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{src}",
                dest,
            ]
        dest = {
            "occystrap-oci": f"oci://{out}/layout",
            "occystrap-tar": f"tar://{out}/app.tar",
            "occystrap-dir": f"dir://{out}/dir",
            "occystrap-registry": f"registry://{other}",
        }[self.name]
        return [*OCCYSTRAP, "--insecure", "-q", "process", f"registry://{src}", dest]


SCENARIOS = [
    Scenario("skopeo-oci", "skopeo", None),
    Scenario("occystrap-oci", "occystrap", "skopeo-oci"),
    Scenario("skopeo-docker-archive", "skopeo", None),
    Scenario("occystrap-tar", "occystrap", "skopeo-docker-archive"),
    Scenario("occystrap-dir", "occystrap", None),
    Scenario("skopeo-registry", "skopeo", None),
    Scenario("occystrap-registry", "occystrap", "skopeo-registry"),
]


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper()
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def tree_pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total


def settle() -> None:
    """Let the last run's writeback and discards finish so they do not bill the next one."""
    subprocess.run(["sync"], check=False)
    time.sleep(2)


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak tree PSS of one run."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_pss(ps))
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err}")
    return wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="2G", help="image size(s), comma-separated")
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=None, help="comma-separated scenario or tool names")
    ap.add_argument("--work", default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args()

    chosen = SCENARIOS
    if args.only:
        keep = set(args.only.split(","))
        chosen = [s for s in SCENARIOS if s.name in keep or s.tool in keep]
        if not shutil.which("skopeo"):
            chosen = [s for s in chosen if s.tool != "skopeo"]
    work = tempfile.mkdtemp(prefix="occystrap-bench-", dir=args.work)
    results: dict[str, dict[str, object]] = {}
    try:
        with TestRegistry() as registry:
            for size_text in args.size.split(","):
                size = parse_size(size_text)
                per_layer = size // args.layers
                image = build_image(
                    os.path.join(work, f"build-{size_text}"),
                    seed=42,
                    layer_sizes=[per_layer] * args.layers,
                    compressible=0.0,
                    special_entries=False,
                )
                name = f"bench/app{size_text.lower()}"
                push_image(registry.url, name, "1.0", image)
                shutil.rmtree(os.path.join(work, f"build-{size_text}"), ignore_errors=True)
                src = f"{registry.host}/{name}:1.0"
                times: dict[str, list[float]] = {s.name: [] for s in chosen}
                peaks: dict[str, list[int]] = {s.name: [] for s in chosen}
                for _ in range(args.runs):
                    for s in chosen:
                        # A fresh destination registry for every run: skopeo remembers where
                        # blobs were seen and would mount them from an earlier run's copy.
                        second = TestRegistry().start()
                        other = f"{second.host}/copy/app:1.0"
                        out = os.path.join(work, "out")
                        shutil.rmtree(out, ignore_errors=True)
                        os.makedirs(out)
                        try:
                            wall, peak = timed(s.command(src, out, other))
                        finally:
                            second.stop()
                        times[s.name].append(wall)
                        peaks[s.name].append(peak)
                        shutil.rmtree(out, ignore_errors=True)
                        settle()
                total = sum(layer.size for layer in image.layers)
                print(
                    f"\nimage {size_text}: {args.layers} layers, {total / 1e6:.0f} MB "
                    f"compressed; {args.runs} runs each"
                )
                print(
                    f"{'scenario':<24} {'median s':>9} {'min s':>7} {'max s':>7} {'MB/s':>7} "
                    f"{'peak MB':>8} {'ratio':>14}"
                )
                for s in chosen:
                    med = statistics.median(times[s.name])
                    ratio = ""
                    if s.peer and s.peer in times:
                        peer_med = statistics.median(times[s.peer])
                        ratio = f"{med / peer_med:.2f}x {s.peer.split('-', 1)[1]}"
                    print(
                        f"{s.name:<24} {med:>9.2f} {min(times[s.name]):>7.2f} "
                        f"{max(times[s.name]):>7.2f} "
                        f"{total / 1e6 / med:>7.0f} {max(peaks[s.name]) / 1e6:>8.1f} {ratio:>14}"
                    )
                    results.setdefault(size_text, {})[s.name] = {
                        "times": times[s.name],
                        "median": med,
                        "peak_pss": max(peaks[s.name]),
                        "bytes": total,
                    }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", f"copy-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
