"""Soak: 200 image copies with -J 6 -j 8 through a fault-injecting proxy (5% of requests
fail in a recoverable way: 503, 429 with Retry-After, a body cut short). Every image must
arrive verified; memory and open file descriptors of the process tree must stay flat; no
temp file may remain. Not part of the test suite (it takes a minute or two):

    .venv/bin/python -m bench.soak [--images 200] [--rate 0.05]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.httpfaults import HTTPFaults, Rule  # noqa: E402
from tools.imagebuilder import build_image, push_image  # noqa: E402
from tools.testregistry import TestRegistry  # noqa: E402


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rate", type=float, default=0.05)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="occystrap-soak-")
    with TestRegistry() as registry:
        t0 = time.monotonic()
        for i in range(args.images):
            image = build_image(os.path.join(work, "build", str(i)), seed=9000 + i,
                                layer_sizes=[60_000, 8_000], special_entries=False,
                                shared_base_key="soak-base")
            push_image(registry.url, f"soak/app-{i:03d}", "1.0", image)
        print(f"pushed {args.images} images in {time.monotonic() - t0:.1f} s")
        rules = [Rule("GET", r"/v2/.+/(blobs|manifests)/", "status", status=503,
                      chance=args.rate / 3),
                 Rule("GET", r"/v2/.+/blobs/", "status", status=429,
                      headers={"Retry-After": "1"}, chance=args.rate / 3),
                 Rule("GET", r"/v2/.+/blobs/", "truncate", chance=args.rate / 3)]
        with HTTPFaults(registry.port, rules) as faults:
            out = os.path.join(work, "out")
            os.makedirs(out)
            cmd = [os.path.join(ROOT, ".venv", "bin", "occystrap"), "--insecure", "-q",
                   "-J", "6", "-j", "8", "--retries", "6", "--stats-file",
                   os.path.join(work, "stats.json"), "process",
                   f"registry://{faults.host}/soak/*:1.0", f"oci://{out}/layout"]
            env = dict(os.environ, OCCYSTRAP_BACKOFF_SCALE="0.05")
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
            samples = []
            while proc.poll() is None:
                procs = tree(proc.pid)
                fds = pss = 0
                for p in procs:
                    try:
                        fds += p.num_fds()
                        pss += p.memory_full_info().pss
                    except psutil.Error:
                        pass
                samples.append((time.monotonic() - t0, fds, pss))
                time.sleep(0.2)
            err = proc.stderr.read() if proc.stderr else ""
            wall = time.monotonic() - t0
            fired = {f"{r.action}{r.status if r.action == 'status' else ''}": r.fired
                     for r in rules}
    layout = os.path.join(out, "layout")
    index = json.load(open(os.path.join(layout, "index.json")))
    bad = 0
    blobs = os.path.join(layout, "blobs", "sha256")
    for name in os.listdir(blobs):
        with open(os.path.join(blobs, name), "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != name:
                bad += 1
    leftovers = [n for n in os.listdir(out) if n != "layout"]
    body = [s for s in samples if s[1] > 0]
    third = max(1, len(body) // 3)
    print(f"exit {proc.returncode} in {wall:.1f} s; faults injected: {fired}")
    print(f"images in index.json: {len(index['manifests'])}/{args.images}; "
          f"blobs {len(os.listdir(blobs))}, bad digests {bad}; temp files left: {leftovers}")
    if body:
        print(f"open fds (tree): first third max {max(s[1] for s in body[:third])}, "
              f"last third max {max(s[1] for s in body[-third:])}")
        print(f"PSS (tree): first third max {max(s[2] for s in body[:third]) / 1e6:.1f} MB, "
              f"last third max {max(s[2] for s in body[-third:]) / 1e6:.1f} MB")
    if proc.returncode != 0:
        print(err[-2000:])
    ok = proc.returncode == 0 and len(index["manifests"]) == args.images and not bad \
        and not leftovers
    print("SOAK OK" if ok else "SOAK FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
