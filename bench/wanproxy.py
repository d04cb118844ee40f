"""A WAN on loopback: an asyncio TCP proxy that delays every byte by a fixed time in each
direction and caps the bandwidth of each direction of the link, shared by all connections.

    .venv/bin/python -m bench.wanproxy --upstream 127.0.0.1:5000            # 25 ms, 100 MB/s
    .venv/bin/python -m bench.wanproxy --upstream 127.0.0.1:5000 --delay-ms 0 --rate-mb-s 0 \\
        --events /tmp/ev.txt                   # no degradation, only the request timestamps

It prints ``127.0.0.1:PORT`` on its first line of stdout once it listens, and runs until
SIGTERM. It relays bytes, so TLS and HTTP/2 pass through untouched (ALPN is the
registry's). Model: a chunk read at time t from one side is written to the other at
``max(t, link free) + len/rate + delay``, so the pipe holds many chunks in flight (a round
trip is 2 × delay, not a chunk at a time); each direction of each connection holds at most
``--window`` bytes in flight (like a TCP window: one connection moves at most window / RTT),
and the rate is shared by every connection, like the one link they would all cross, whose
buffer holds ``--queue-ms`` of data (default one round trip): a sender waits while it is
full, so queueing adds at most that much delay to a small request behind large ones.

``--events FILE``: one line per connection when it closes, ``conn FIRST LAST``, the
``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes) of its first
client byte and of the last byte relayed either way; bench/fixedcost.py reads them to time
"process start → first request" and "last byte → exit". Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

CHUNK = 256 << 10


def _die_with_parent() -> None:
    """SIGTERM this proxy when the harness dies (Linux PR_SET_PDEATHSIG = 1), as the test
    registries do: a killed benchmark must not leave a proxy holding a port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


class Link:
    """One direction of the WAN: a delay, and a bandwidth shared by every connection in
    front of a buffer that holds at most ``queue`` seconds of data (a bottleneck router's
    buffer, about one round trip by default: without a bound, every connection's window
    would queue up and a small response would wait behind all of them).

    Pure arithmetic over the caller's clock, so it can be unit-tested.
    """

    def __init__(self, delay: float, rate: float, queue: float = 0.0) -> None:
        self.delay = delay  # seconds, one way
        self.rate = rate  # bytes per second; 0: unlimited
        self.queue = queue  # seconds of backlog the link buffers before a sender must wait
        self.free_at = 0.0  # when the link has sent everything scheduled so far

    def wait_before(self, now: float) -> float:
        """Seconds a sender must hold its next chunk at ``now`` (the buffer is full)."""
        return max(0.0, self.free_at - now - self.queue)

    def schedule(self, nbytes: int, now: float) -> float:
        """When a chunk of ``nbytes`` that arrived at ``now`` reaches the far side."""
        start = max(now, self.free_at)
        done = start + (nbytes / self.rate if self.rate else 0.0)
        self.free_at = done
        return done + self.delay


@dataclass
class _Flow:
    """One direction of one connection: bytes read but not yet delivered."""

    room: asyncio.Condition
    in_flight: int = 0
    broken: bool = False  # the far side went away: stop reading, nothing can be delivered


class Proxy:
    """The asyncio server: one :class:`Link` per direction, shared by every connection."""

    def __init__(
        self,
        upstream: tuple[str, int],
        delay: float,
        rate: float,
        window: int,
        events: str | None,
        queue: float = 0.0,
    ) -> None:
        self.upstream = upstream
        self.up = Link(delay, rate, queue)  # client → registry
        self.down = Link(delay, rate, queue)  # registry → client
        self.window = window
        self.events = events

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: Link,
        marks: dict[str, float],
        client: bool,
    ) -> None:
        """Relay one direction: read as fast as the window allows, write each chunk when
        the link says it arrives."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        flow = _Flow(asyncio.Condition())

        async def deliver() -> None:
            try:
                while True:
                    when, data = await queue.get()
                    if not data:
                        break
                    wait = when - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    writer.write(data)
                    await writer.drain()
                    marks["last"] = time.monotonic()
                    async with flow.room:
                        flow.in_flight -= len(data)
                        flow.room.notify_all()
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()
            except (ConnectionError, OSError):
                async with flow.room:
                    flow.broken = True
                    flow.room.notify_all()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(CHUNK):
                if client and "first" not in marks:
                    marks["first"] = time.monotonic()
                async with flow.room:
                    await flow.room.wait_for(lambda: flow.broken or flow.in_flight < self.window)
                    if flow.broken:
                        break
                    flow.in_flight += len(data)
                while (hold := link.wait_before(loop.time())) > 0:
                    await asyncio.sleep(hold)
                queue.put_nowait((link.schedule(len(data), loop.time()), data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((0.0, b""))
            await sender
            if flow.broken:
                writer.close()

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        marks: dict[str, float] = {}
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.close()
            return
        try:
            await asyncio.gather(
                self._pipe(c_reader, u_writer, self.up, marks, True),
                self._pipe(u_reader, c_writer, self.down, marks, False),
            )
        finally:
            for w in (c_writer, u_writer):
                w.close()
            if self.events and "first" in marks:
                with open(self.events, "a") as f:
                    f.write(f"conn {marks['first']:.6f} {marks.get('last', marks['first']):.6f}\n")


async def serve(proxy: Proxy, port: int) -> None:
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port)
    sock = server.sockets[0].getsockname()
    print(f"127.0.0.1:{sock[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    # Connections still open at the end belong to nobody's measurement: leave without
    # draining them (asyncio would otherwise complain about each pending relay task).
    sys.stdout.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.wanproxy", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--upstream", required=True, help="127.0.0.1:PORT of the registry")
    ap.add_argument("--port", type=int, default=0, help="listen port (0: any free one)")
    ap.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay (default 25)")
    ap.add_argument(
        "--rate-mb-s",
        type=float,
        default=100.0,
        help="bandwidth of each direction in MB/s, shared (default 100; 0: none)",
    )
    ap.add_argument(
        "--window",
        type=int,
        default=4 << 20,
        help="bytes in flight per connection and direction (default 4 MiB)",
    )
    ap.add_argument(
        "--queue-ms",
        type=float,
        default=None,
        help="the link's buffer, in ms of data (default: one round trip, ≥ 5)",
    )
    ap.add_argument("--events", default=None, help="append one line per closed connection")
    args = ap.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("--upstream must be on loopback")
    queue = args.queue_ms if args.queue_ms is not None else max(5.0, 2 * args.delay_ms)
    proxy = Proxy(
        (host, int(port)),
        args.delay_ms / 1000,
        args.rate_mb_s * 1e6,
        args.window,
        args.events,
        queue / 1000,
    )
    asyncio.run(serve(proxy, args.port))
    return 0


class WanProxy:
    """This proxy in its own process (so that its event loop never waits on the harness's
    GIL), in front of ``upstream`` (127.0.0.1:PORT). ``delay_ms=0, rate_mb_s=0`` relays
    untouched, for the timestamps alone. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        upstream: str,
        *,
        delay_ms: float = 25.0,
        rate_mb_s: float = 100.0,
        window: int = 4 << 20,
        events: str | None = None,
    ) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "bench.wanproxy",
            "--upstream",
            upstream,
            "--delay-ms",
            str(delay_ms),
            "--rate-mb-s",
            str(rate_mb_s),
            "--window",
            str(window),
        ]
        self.events = events
        if events:
            self.argv += ["--events", events]
        self.proc: subprocess.Popen[str] | None = None
        self.host = ""

    def start(self) -> WanProxy:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            self.argv,
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        self.host = self.proc.stdout.readline().strip()
        if not self.host.startswith("127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"bench.wanproxy did not start: {self.argv}")
        return self

    def reset_events(self) -> None:
        """Forget earlier connections (the file is opened per line, so truncating is safe)."""
        if self.events:
            open(self.events, "w").close()

    def read_events(self, settle: float = 0.3) -> list[tuple[float, float]]:
        """(first client byte, last byte) per closed connection, after ``settle`` seconds for
        the connections of an exited process to be noticed and logged."""
        time.sleep(settle)
        if not self.events or not os.path.exists(self.events):
            return []
        with open(self.events) as f:
            return [
                (float(p[1]), float(p[2]))
                for p in (line.split() for line in f)
                if len(p) == 3 and p[0] == "conn"
            ]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> WanProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
