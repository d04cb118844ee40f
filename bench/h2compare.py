"""HTTP/1.1 pooling against HTTP/2 multiplexing, with httpx, against the TLS test registry
(distribution serves h2 over TLS through ALPN) behind the WAN proxy (bench/wanproxy.py).

    .venv/bin/python -m bench.h2compare                       # 25 ms each way, 100 MB/s
    .venv/bin/python -m bench.h2compare --delay-ms 50 --repeat 5 --blob-mib 8

Three kinds of request, each timed from a fresh client (so connection and TLS set-up count,
as they do for a new process), the two protocols interleaved, median of ``--repeat``:

- **metadata**: a burst of manifest HEADs and GETs over ``--repos`` repositories, 8 and 32 at
  a time (a bulk mirror's resolve and re-run);
- **download**: every test blob, 4, 8 and 16 at a time (``-j``), bodies streamed and dropped;
- **upload**: POST + one monolithic PUT per blob into a fresh repository, 4 and 8 at a time.

HTTP/1.1 gets one pooled connection per concurrent request (httpx's pool, ``max_connections``
= concurrency); HTTP/2 multiplexes them on one connection. The last column is the protocol
each response actually came back with (``response.http_version``): a server without h2 shows
``HTTP/1.1`` in both columns. Prints a markdown table (for docs/performance.md) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import httpx  # noqa: E402

from bench.wanproxy import WanProxy  # noqa: E402
from tools.imagebuilder import Blob, build_image, push_blob, push_manifest  # noqa: E402
from tools.testregistry import TestRegistry  # noqa: E402

MiB = 1 << 20
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def make_blobs(workdir: str, count: int, size: int) -> list[Blob]:
    """``count`` incompressible blobs of ``size`` bytes on disk (seeded: same bytes each run)."""
    blobs = []
    for i in range(count):
        data = random.Random(f"h2compare-{i}").randbytes(size)
        path = os.path.join(workdir, f"blob-{i}")
        with open(path, "wb") as f:
            f.write(data)
        blobs.append(
            Blob(
                "sha256:" + hashlib.sha256(data).hexdigest(),
                len(data),
                path,
                "application/octet-stream",
            )
        )
    return blobs


async def _gather(jobs: list[Callable[[], Awaitable[str]]], concurrency: int) -> set[str]:
    """Run ``jobs`` at most ``concurrency`` at a time; the HTTP versions they saw."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[str]]) -> str:
        async with gate:
            return await job()

    return set(await asyncio.gather(*(one(j) for j in jobs)))


def client(h2: bool, concurrency: int, ctx: ssl.SSLContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        http1=not h2,
        http2=h2,
        verify=ctx,
        timeout=120,
        trust_env=False,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )


async def metadata(
    base: str, h2: bool, c: int, ctx: ssl.SSLContext, repos: list[str], per_repo: int
) -> tuple[float, set[str]]:
    async with client(h2, c, ctx) as cl:

        def job(method: str, repo: str) -> Callable[[], Awaitable[str]]:
            async def run() -> str:
                r = await cl.request(
                    method, f"{base}/v2/{repo}/manifests/1.0", headers={"Accept": ACCEPT}
                )
                r.raise_for_status()
                return r.http_version

            return run

        jobs = [job(m, repo) for repo in repos for _ in range(per_repo) for m in ("HEAD", "GET")]
        t0 = time.perf_counter()
        seen = await _gather(jobs, c)
        return time.perf_counter() - t0, seen


async def download(
    base: str, h2: bool, c: int, ctx: ssl.SSLContext, blobs: list[Blob]
) -> tuple[float, set[str]]:
    async with client(h2, c, ctx) as cl:

        def job(blob: Blob) -> Callable[[], Awaitable[str]]:
            async def run() -> str:
                async with cl.stream("GET", f"{base}/v2/h2/blobs/blobs/{blob.digest}") as r:
                    r.raise_for_status()
                    async for _ in r.aiter_raw(MiB):
                        pass
                    return r.http_version

            return run

        t0 = time.perf_counter()
        seen = await _gather([job(b) for b in blobs], c)
        return time.perf_counter() - t0, seen


async def upload(
    base: str, h2: bool, c: int, ctx: ssl.SSLContext, blobs: list[Blob], repo: str
) -> tuple[float, set[str]]:
    async with client(h2, c, ctx) as cl:

        def job(blob: Blob) -> Callable[[], Awaitable[str]]:
            async def run() -> str:
                start = await cl.post(f"{base}/v2/{repo}/blobs/uploads/")
                start.raise_for_status()
                loc = httpx.URL(base).join(start.headers["Location"])
                with open(blob.path, "rb") as f:
                    data = f.read()  # the body in memory: the transport is what is measured
                r = await cl.put(
                    loc.copy_merge_params({"digest": blob.digest}),
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
                r.raise_for_status()
                return r.http_version

            return run

        t0 = time.perf_counter()
        seen = await _gather([job(b) for b in blobs], c)
        return time.perf_counter() - t0, seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.h2compare", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay (default 25)")
    ap.add_argument("--rate-mb-s", type=float, default=100.0, help="MB/s each way (default 100)")
    ap.add_argument("--repos", type=int, default=30, help="repositories for metadata (30)")
    ap.add_argument("--per-repo", type=int, default=4, help="HEAD+GET pairs per repository (4)")
    ap.add_argument("--blobs", type=int, default=16, help="blobs to download (16)")
    ap.add_argument("--blob-mib", type=int, default=16, help="MiB per blob (16)")
    ap.add_argument("--uploads", type=int, default=8, help="blobs to upload (8)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell, median (3)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="occystrap-h2-") as work, TestRegistry(tls=True) as reg:
        assert reg.ca_file is not None
        ctx = ssl.create_default_context(cafile=reg.ca_file)
        names = [f"h2/app-{i:02d}" for i in range(args.repos)]
        blobs = make_blobs(work, max(args.blobs, args.uploads), args.blob_mib * MiB)
        with httpx.Client(base_url=reg.url, verify=ctx, timeout=120, trust_env=False) as c:
            for i, name in enumerate(names):  # push_image has no CA option: its parts do
                img = build_image(
                    os.path.join(work, "img"), 500 + i, [64 << 10], special_entries=False
                )
                for b in img.blobs:
                    push_blob(c, name, b)
                push_manifest(c, name, "1.0", img.manifest, img.manifest_media_type)
            for b in blobs:
                push_blob(c, "h2/blobs", b)
        print(
            f"registry {reg.url} (TLS) behind bench/wanproxy.py: {args.delay_ms:g} ms each "
            f"way, {args.rate_mb_s:g} MB/s; median of {args.repeat}",
            file=sys.stderr,
        )
        with WanProxy(reg.host, delay_ms=args.delay_ms, rate_mb_s=args.rate_mb_s) as proxy:
            base = f"https://{proxy.host}"
            cells: list[tuple[str, int, str, Callable[[bool, int], Awaitable]]] = []
            n_meta = 2 * args.repos * args.per_repo
            for c in (8, 32):
                cells.append(
                    (
                        "metadata (manifest HEAD + GET)",
                        c,
                        f"{n_meta} requests",
                        lambda h2, c: metadata(base, h2, c, ctx, names, args.per_repo),
                    )
                )
            down = blobs[: args.blobs]
            for c in (4, 8, 16):
                cells.append(
                    (
                        "blob download",
                        c,
                        f"{len(down)} × {args.blob_mib} MiB",
                        lambda h2, c: download(base, h2, c, ctx, down),
                    )
                )
            up = blobs[: args.uploads]
            for c in (4, 8):
                cells.append(
                    (
                        "blob upload (POST + PUT)",
                        c,
                        f"{len(up)} × {args.blob_mib} MiB",
                        lambda h2, c: upload(
                            base, h2, c, ctx, up, f"h2/up-{int(h2)}-{c}-{time.monotonic_ns()}"
                        ),
                    )
                )
            lines = [
                "| kind | at once | what | HTTP/1.1 s | HTTP/2 s | h2 / h1 | negotiated |",
                "| --- | ---: | --- | ---: | ---: | ---: | --- |",
            ]
            for kind, c, what, run in cells:
                times: dict[bool, list[float]] = {False: [], True: []}
                seen: dict[bool, set[str]] = {False: set(), True: set()}
                for _ in range(args.repeat):
                    for h2 in (False, True):
                        secs, versions = asyncio.run(run(h2, c))
                        times[h2].append(secs)
                        seen[h2] |= versions
                h1, h2s = statistics.median(times[False]), statistics.median(times[True])
                neg = f"{'/'.join(sorted(seen[False]))} · {'/'.join(sorted(seen[True]))}"
                lines.append(
                    f"| {kind} | {c} | {what} | {h1:.2f} | {h2s:.2f} | {h2s / h1:.2f} | {neg} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
