"""Registry → registry copy of an attested multi-platform index (what `docker buildx` pushes
by default: each platform's image followed by its provenance attestation manifest), ours
against `skopeo copy --all --preserve-digests`, interleaved, each run into a fresh registry.

Also counts the HTTP requests each tool sends to the source and the destination (through a
counting TCP proxy on loopback), to show what the attestation manifests cost: they are tiny,
so their price is requests, not bytes.

    .venv/bin/python -m bench.attested --runs 5 [--platforms 2] [--layer-mib 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.faultproxy import FaultProxy
from tools import artifactbuilder as ab
from tools.imagebuilder import DEFAULT_PLATFORMS
from tools.testregistry import TestRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent


def commands(src: str, dest: str) -> dict[str, list[str]]:
    occystrap = str(REPO_ROOT / ".venv" / "bin" / "occystrap")
    return {
        "occystrap": [
            occystrap,
            "--insecure",
            "-q",
            "process",
            f"registry://{src}",
            f"registry://{dest}",
        ],
        "skopeo": [
            "skopeo",
            "copy",
            "--all",
            "--preserve-digests",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{src}",
            f"docker://{dest}",
        ],
    }


def one(tool: str, source: TestRegistry, ref: str) -> tuple[float, int, int]:
    """(seconds, requests to the source, requests to the destination) for one copy into a
    fresh registry."""
    with (
        TestRegistry() as dest,
        FaultProxy(source.port) as src_wire,
        FaultProxy(dest.port) as dest_wire,
    ):
        cmd = commands(f"{src_wire.host}/{ref}", f"{dest_wire.host}/{ref}")[tool]
        started = time.monotonic()
        result = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"{tool} failed: {result.stderr}")
        return seconds, len(src_wire.request_times), len(dest_wire.request_times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.attested", description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--platforms", type=int, default=2)
    ap.add_argument("--layer-mib", type=float, default=8.0)
    args = ap.parse_args(argv)
    size = int(args.layer_mib * 2**20)
    with tempfile.TemporaryDirectory(prefix="bench-attested-") as work, TestRegistry() as source:
        plain = ab.attested_index(
            work, 4242, DEFAULT_PLATFORMS[: args.platforms], [size, size // 4]
        )
        ab.push(source.url, "bench/attested", "1.0", plain)
        children = sum(1 for _ in plain.children)
        print(
            f"attested index: {args.platforms} platforms, {children} manifests below the "
            f"index, layers {args.layer_mib} MiB + {args.layer_mib / 4} MiB per platform"
        )
        times: dict[str, list[float]] = {"occystrap": [], "skopeo": []}
        requests: dict[str, tuple[int, int]] = {}
        for run in range(args.runs + 1):  # the first round warms caches, untimed
            for tool in times:
                seconds, src_requests, dest_requests = one(tool, source, "bench/attested:1.0")
                if run:
                    times[tool].append(seconds)
                requests[tool] = (src_requests, dest_requests)
        for tool, values in times.items():
            src_requests, dest_requests = requests[tool]
            print(
                f"{tool:10} median {statistics.median(values):.3f} s "
                f"(min {min(values):.3f}, max {max(values):.3f}); "
                f"requests: {src_requests} to the source, {dest_requests} to the "
                "destination"
            )
        ratio = statistics.median(times["occystrap"]) / statistics.median(times["skopeo"])
        print(f"ratio occystrap/skopeo: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
