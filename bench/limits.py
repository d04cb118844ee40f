"""The physical limits of a copy on this machine, measured rather than assumed.

A copy cannot be faster than its slowest unavoidable resource: reading every blob from the
source registry, hashing every byte (sha256 is mandatory to verify digests), gunzipping layers
when the output is unpacked, writing the bytes to disk, or uploading them to the destination
registry. Each is measured on its own, with the same parallelism a copier would use, and the
workflow's limit is the largest of the ones it needs: a lower bound that assumes perfect
overlap. Efficiency = limit / measured time (1.0 would be perfect).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from isal import isal_zlib

from occystrap.layers.codec import ISAL_LEVEL

BUF = 1 << 20
THREADS = 4  # occystrap's and skopeo's default download parallelism


@dataclass(frozen=True)
class BlobRef:
    """A blob in the source registry, and where its bytes are on local disk (for uploads)."""

    digest: str
    size: int
    path: str
    gzip: bool
    repo: str = ""  # a repository of the source registry that holds it ("": the caller's name)


def _parallel(
    items: Sequence[BlobRef], work: Callable[[BlobRef], object], threads: int = THREADS
) -> float:
    """Seconds to run ``work`` over ``items`` with ``threads`` workers, largest first."""
    ordered = sorted(items, key=lambda b: b.size, reverse=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, ordered))
    return time.perf_counter() - t0


def _best(fn: Callable[[], float], repeat: int) -> float:
    """Best of ``repeat``: a limit is what the machine *can* do, so noise only adds."""
    return min(fn() for _ in range(repeat))


def read_seconds(host: str, name: str, blobs: Sequence[BlobRef], repeat: int = 3) -> float:
    """GET every blob in parallel into a reused buffer and throw the bytes away (each from
    its own ``repo`` when it has one: a registry serves a blob only where it is linked)."""

    def one(blob: BlobRef) -> None:
        conn = http.client.HTTPConnection(host, timeout=120)
        try:
            conn.request("GET", f"/v2/{blob.repo or name}/blobs/{blob.digest}")
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"GET {blob.digest}: {resp.status}")
            buf = bytearray(BUF)
            view = memoryview(buf)
            while resp.readinto(view):
                pass
        finally:
            conn.close()

    return _best(lambda: _parallel(blobs, one), repeat)


def sha256_seconds(blobs: Sequence[BlobRef], threads: int, repeat: int = 3) -> float:
    """Hash as many bytes as the blobs hold, ``threads`` at a time (hashlib drops the GIL).

    Hashing a buffer already in memory excludes I/O, which the read limit covers.
    """
    chunk = os.urandom(BUF)

    def one(blob: BlobRef) -> None:
        h = hashlib.sha256()
        left = blob.size
        while left > 0:
            n = min(left, BUF)
            h.update(chunk[:n] if n < BUF else chunk)
            left -= n

    return _best(lambda: _parallel(blobs, one, threads), repeat)


def sha256_ms_per_mb(nbytes: int = 256 * BUF, repeat: int = 3) -> float:
    """Milliseconds of one core's CPU to sha256 one MB (10**6 bytes), hashing ``nbytes`` of
    a buffer already in memory in 1 MiB updates: the floor of a fetch that verifies as it
    downloads, to compare with the fetch stage's CPU per MB (issue 17)."""
    chunk = os.urandom(BUF)

    def once() -> float:
        h = hashlib.sha256()
        t0 = time.process_time()
        for _ in range(nbytes // BUF):
            h.update(chunk)
        return time.process_time() - t0

    return _best(once, repeat) * 1000 / (nbytes / 1e6)


def gunzip_seconds(blobs: Sequence[BlobRef], threads: int, repeat: int = 2) -> tuple[float, int]:
    """Decompress every gzip layer (from the builder's files, page-cached), ``threads`` at a
    time; returns (seconds, uncompressed bytes). Needed for outputs that unpack (dir, v1.2 tar).
    """
    layers = [b for b in blobs if b.gzip]
    sizes: dict[str, int] = {}

    def one(blob: BlobRef) -> None:
        d = isal_zlib.decompressobj(31)  # what occystrap inflates with
        n = 0
        with open(blob.path, "rb") as f:
            while chunk := f.read(BUF):
                n += len(d.decompress(chunk))
        sizes[blob.digest] = n + len(d.flush())

    secs = _best(lambda: _parallel(layers, one, threads), repeat)
    return secs, sum(sizes.values())


def gzip_seconds(
    regions: Sequence[tuple[str, int, int]], threads: int, level: int = ISAL_LEVEL, repeat: int = 2
) -> float:
    """gzip the uncompressed layers at ``regions`` (path, offset, length: members of a
    page-cached tarball), ``threads`` at a time, with what occystrap's --compression gzip
    uses by default (ISA-L at its level 2): the CPU floor of pushing a `docker save`
    tarball, whose layers are not compressed."""

    def one(region: tuple[str, int, int]) -> None:
        path, offset, length = region
        z = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
        with open(path, "rb") as f:
            f.seek(offset)
            left = length
            while left > 0 and (chunk := f.read(min(BUF, left))):
                z.compress(chunk)
                left -= len(chunk)
        z.flush()

    def once() -> float:
        ordered = sorted(regions, key=lambda r: r[2], reverse=True)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, ordered))
        return time.perf_counter() - t0

    return _best(once, repeat)


def write_seconds(directory: str, nbytes: int, repeat: int = 2) -> float:
    """Write ``nbytes`` to a file in ``directory`` (1 MiB writes, no fsync, as copiers do),
    then delete it; a sync between repeats keeps one run's writeback out of the next."""
    chunk = os.urandom(BUF)
    path = os.path.join(directory, ".bench-write-limit")

    def once() -> float:
        os.sync()
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            left = nbytes
            while left > 0:
                n = min(left, BUF)
                f.write(chunk[:n] if n < BUF else chunk)
                left -= n
        secs = time.perf_counter() - t0
        os.unlink(path)
        return secs

    return _best(once, repeat)


def upload_seconds(
    make_registry: Callable[[], object],
    blobs: Sequence[BlobRef],
    name: str = "limit/upload",
    repeat: int = 2,
) -> float:
    """POST + one monolithic PUT per blob, in parallel, into a fresh registry each time.

    ``make_registry`` returns a started TestRegistry (its ``host`` is 127.0.0.1:PORT); the
    registry is stopped afterwards, so no run sees blobs left by another.
    """

    def once() -> float:
        reg = make_registry()
        host = reg.host  # type: ignore[attr-defined]

        def one(blob: BlobRef) -> None:
            conn = http.client.HTTPConnection(host, timeout=120, blocksize=BUF)
            try:
                conn.request("POST", f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 202:
                    raise RuntimeError(f"POST upload: {resp.status}")
                loc = urljoin(f"http://{host}/", resp.headers["Location"])
                parts = urlsplit(loc)
                sep = "&" if parts.query else ""
                target = f"{parts.path}?{parts.query}{sep}digest={blob.digest}"
                with open(blob.path, "rb") as f:
                    conn.request(
                        "PUT",
                        target,
                        body=f,
                        headers={
                            "Content-Length": str(blob.size),
                            "Content-Type": "application/octet-stream",
                        },
                    )
                    resp = conn.getresponse()
                    resp.read()
                if resp.status != 201:
                    raise RuntimeError(f"PUT {blob.digest}: {resp.status}")
            finally:
                conn.close()

        try:
            return _parallel(blobs, one)
        finally:
            reg.stop()  # type: ignore[attr-defined]

    return _best(once, repeat)


def head_seconds(host: str, name: str, reference: str, repeat: int = 20) -> float:
    """Median time of one manifest HEAD on a fresh connection: the floor of a no-op re-run
    (a new process must connect at least once)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(host, timeout=30)
        conn.request("HEAD", f"/v2/{name}/manifests/{reference}", headers={"Accept": "*/*"})
        conn.getresponse().read()
        conn.close()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
