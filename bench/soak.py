"""Soak: 200 image copies with -J 6 -j 8 through a fault-injecting proxy (5% of requests
fail in a recoverable way: 503, 429 with Retry-After, a body cut short; 3% of manifest
answers say the registry's rate limit is spent, a 1.5 s pause that must be said on stderr
and counted in the statistics).
Every image must arrive verified; memory and open file descriptors of the process tree must
stay flat; no temp file may remain. Not part of the test suite (it takes a minute or two):

    .venv/bin/python -m bench.soak [--images 200] [--rate 0.05] [--hostile 12]

`--hostile N` adds N images the registry serves with hostile faults (issue 15), which must
each fail with one line and no internal error while the others go on: a manifest that is a
zstd bomb (1 GiB from 32 KiB), a manifest that claims gzip and is not, a layer whose
Content-Length is longer than its descriptor. Meanwhile another occystrap copies an image
with a corrupt layer that shares the base layer into the same layout, again and again, and
fails each time: every image the soak publishes must still have all its blobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
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


def push_hostile(registry: TestRegistry, work: str, count: int) -> list[Rule]:
    """`count` images the proxy serves with hostile faults, a third of each kind, and the
    image the rival run copies (its second layer corrupt in the registry's storage)."""
    rules = []
    for i in range(count):
        kind = ("bomb", "enc", "long")[i % 3]
        name = f"soak/hostile-{kind}-{i:03d}"
        image = build_image(
            os.path.join(work, "build", name),
            seed=19000 + i,
            layer_sizes=[60_000, 8_000],
            special_entries=False,
            shared_base_key="soak-base",
        )
        push_image(registry.url, name, "1.0", image)
        if kind == "bomb":
            rules.append(Rule("GET", f"^/v2/{name}/manifests/", "bomb", times=10**6))
        elif kind == "enc":
            rules.append(Rule("GET", f"^/v2/{name}/manifests/", "bad_encoding", times=10**6))
        else:
            rules.append(
                Rule("GET", f"/blobs/{image.layers[1].digest}", "overlong", extra=4096, times=10**6)
            )
    rival = build_image(
        os.path.join(work, "build", "rival"),
        seed=29000,
        layer_sizes=[60_000, 400_000],
        special_entries=False,
        shared_base_key="soak-base",
    )
    push_image(registry.url, "rival/broken", "1.0", rival)
    digest = rival.layers[1].digest.split(":", 1)[1]
    blob = os.path.join(
        registry.dir,
        "data",
        "docker",
        "registry",
        "v2",
        "blobs",
        "sha256",
        digest[:2],
        digest,
        "data",
    )
    with open(blob, "r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    return rules


class Rival:
    """Another occystrap copying rival/broken into the soak's layout, over and over, while
    the soak runs: it brings in the shared base layer and fails on its corrupt one."""

    def __init__(self, host: str, layout: str, env: dict[str, str]) -> None:
        self.runs = self.bad = 0
        self._stop = threading.Event()
        cmd = [
            os.path.join(ROOT, ".venv", "bin", "occystrap"),
            "--insecure",
            "-q",
            "process",
            f"registry://{host}/rival/broken:1.0",
            f"oci://{layout}:rival",
        ]

        def loop() -> None:
            while not self._stop.is_set():
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                self.runs += 1
                lines = [ln for ln in r.stderr.splitlines() if ln.startswith("occystrap:")]
                if r.returncode != 1 or len(lines) != 1 or "internal error" in r.stderr:
                    self.bad += 1

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.runs, self.bad


def missing_blobs(layout: str, index: dict[str, object]) -> int:
    """Blobs the published entries name that are not in the layout."""
    missing = 0
    for entry in index["manifests"]:  # type: ignore[attr-defined]
        path = os.path.join(layout, "blobs", "sha256", entry["digest"].split(":", 1)[1])
        if not os.path.exists(path):
            missing += 1
            continue
        with open(path, "rb") as f:
            manifest = json.load(f)
        for d in [manifest["config"], *manifest["layers"]]:
            if not os.path.exists(
                os.path.join(layout, "blobs", "sha256", d["digest"].split(":", 1)[1])
            ):
                missing += 1
    return missing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--hostile", type=int, default=12)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="occystrap-soak-")
    with TestRegistry() as registry:
        t0 = time.monotonic()
        for i in range(args.images):
            image = build_image(
                os.path.join(work, "build", str(i)),
                seed=9000 + i,
                layer_sizes=[60_000, 8_000],
                special_entries=False,
                shared_base_key="soak-base",
            )
            push_image(registry.url, f"soak/app-{i:03d}", "1.0", image)
        hostile_rules = push_hostile(registry, work, args.hostile)
        print(
            f"pushed {args.images} + {args.hostile} hostile images in {time.monotonic() - t0:.1f} s"
        )
        rules = [
            *hostile_rules,
            Rule("GET", r"/v2/.+/(blobs|manifests)/", "status", status=503, chance=args.rate / 3),
            Rule(
                "GET",
                r"/v2/.+/blobs/",
                "status",
                status=429,
                headers={"Retry-After": "1"},
                chance=args.rate / 3,
            ),
            Rule("GET", r"/v2/.+/blobs/", "truncate", chance=args.rate / 3),
            Rule(
                "GET",
                r"/v2/.+/manifests/",
                "add_headers",
                chance=0.03,
                headers={"RateLimit-Limit": "100;w=1.5", "RateLimit-Remaining": "0;w=1.5"},
            ),
        ]
        with HTTPFaults(registry.port, rules) as faults:
            out = os.path.join(work, "out")
            os.makedirs(out)
            cmd = [
                os.path.join(ROOT, ".venv", "bin", "occystrap"),
                "--insecure",
                "-q",
                "-J",
                "6",
                "-j",
                "8",
                "--retries",
                "6",
                "--stats-file",
                os.path.join(work, "stats.json"),
                "process",
                f"registry://{faults.host}/soak/*:1.0",
                f"oci://{out}/layout",
            ]
            env = dict(os.environ, OCCYSTRAP_BACKOFF_SCALE="0.05")
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
            rival = Rival(registry.host, os.path.join(out, "layout"), env)
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
            rival_runs, rival_bad = rival.stop()
            fired: dict[str, int] = {}
            for r in rules:
                key = f"{r.action}{r.status if r.action == 'status' else ''}"
                fired[key] = fired.get(key, 0) + r.fired
    layout = os.path.join(out, "layout")
    index = json.load(open(os.path.join(layout, "index.json")))
    bad = 0
    blobs = os.path.join(layout, "blobs", "sha256")
    for name in os.listdir(blobs):
        with open(os.path.join(blobs, name), "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != name:
                bad += 1
    leftovers = [n for n in os.listdir(out) if n != "layout"]
    leftovers += [n for n in os.listdir(layout) if ".occystrap-" in n]
    missing = missing_blobs(layout, index)
    failures = [ln for ln in err.splitlines() if ln.startswith("occystrap: error:")]
    hostile_failed = [ln for ln in failures if "/soak/hostile-" in ln]
    with open(os.path.join(work, "stats.json")) as f:
        pauses = json.load(f)["requests"]["pauses"]  # said on stderr, unless -q as here
    body = [s for s in samples if s[1] > 0]
    third = max(1, len(body) // 3)
    print(f"exit {proc.returncode} in {wall:.1f} s; faults injected: {fired}")
    print(
        f"images in index.json: {len(index['manifests'])}/{args.images}; "
        f"blobs {len(os.listdir(blobs))}, bad digests {bad}, missing blobs {missing}; "
        f"temp files left: {leftovers}"
    )
    print(
        f"hostile images failed with one line: {len(hostile_failed)}/{args.hostile} "
        f"(other failure lines: {len(failures) - len(hostile_failed)}); internal errors: "
        f"{err.count('internal error')}; pauses over a second (counted): {pauses}"
    )
    print(
        f"rival runs into the same layout (each fails on a corrupt layer): {rival_runs}, "
        f"of which did not fail cleanly: {rival_bad}"
    )
    if body:
        print(
            f"open fds (tree): first third max {max(s[1] for s in body[:third])}, "
            f"last third max {max(s[1] for s in body[-third:])}"
        )
        print(
            f"PSS (tree): first third max {max(s[2] for s in body[:third]) / 1e6:.1f} MB, "
            f"last third max {max(s[2] for s in body[-third:]) / 1e6:.1f} MB"
        )
    expected_code = 1 if args.hostile else 0
    if proc.returncode != expected_code:
        print(err[-2000:])
    ok = (
        proc.returncode == expected_code
        and len(index["manifests"]) == args.images
        and not bad
        and not leftovers
        and not missing
        and len(hostile_failed) == len(failures) == args.hostile
        and "internal error" not in err
        and rival_runs > 0
        and not rival_bad
        and pauses == fired["add_headers"]
    )
    print("SOAK OK" if ok else "SOAK FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
