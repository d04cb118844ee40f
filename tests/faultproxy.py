"""A TCP proxy on 127.0.0.1 that sits in front of the real test registry and misbehaves on
purpose: it throttles bandwidth (so an interrupt can land mid-copy) or cuts a connection
after N response bytes (so a download must resume) or N request bytes (so an upload must).
The registry behind it is the real one; only the wire is degraded, the way a slow or flaky
network would be.
"""

from __future__ import annotations

import re
import socket
import threading
import time

# A request line as the client sends it; the method list keeps body bytes out of a match.
_REQUEST_LINE = re.compile(rb"(GET|HEAD|PUT|POST|PATCH|DELETE) (/\S*) HTTP/1\.1\r\n")


class FaultProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        rate: float | None = None,
        cut_after: int | None = None,
        cuts: int = 1,
        cut_request_after: int | None = None,
        stall_after: int | None = None,
    ) -> None:
        """`rate`: response bytes/s per connection; `cut_after`: close a connection after
        that many response bytes, for the first `cuts` connections that get that far;
        `cut_request_after`: the same for bytes travelling client→registry (an upload).
        `request_bytes` counts every byte the client sent, so tests can tell a resumed
        upload from one that started over."""
        self.upstream = ("127.0.0.1", upstream_port)
        self.rate = rate
        self.cut_after = cut_after
        self.cut_request_after = cut_request_after
        self.request_bytes = 0
        self.response_bytes = 0  # every byte the registry sent back
        self.stall_after = stall_after  # a response stops (silently) after this many bytes
        self.request_times: list[float] = []  # when each HTTP request went upstream
        self.request_lines: list[str] = []  # "PUT /v2/…/manifests/1.0", in order
        self.cuts_left = cuts
        self.cuts_done = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        sent = 0
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                limit = self.cut_after if response else self.cut_request_after
                if limit is not None and sent + len(data) > limit:
                    with self._lock:
                        cut = self.cuts_left > 0
                        if cut:
                            self.cuts_left -= 1
                            self.cuts_done += 1
                    if cut:
                        head = data[: max(0, limit - sent)]
                        dst.sendall(head)
                        if not response:
                            self._count_request(len(head))
                        break
                if (
                    response
                    and self.stall_after is not None
                    and sent + len(data) > self.stall_after
                ):
                    dst.sendall(data[: max(0, self.stall_after - sent)])
                    self._stop.wait(60)  # say nothing more: the client's timeout must fire
                    break
                dst.sendall(data)
                sent += len(data)
                if not response:
                    self._count_request(len(data))
                    starts = data.count(b" HTTP/1.1\r\n")  # request lines in this chunk
                    if starts:
                        lines = [
                            f"{m.decode()} {p.decode()}" for m, p in _REQUEST_LINE.findall(data)
                        ]
                        with self._lock:
                            self.request_times += [time.monotonic()] * starts
                            self.request_lines += lines
                else:
                    with self._lock:
                        self.response_bytes += len(data)
                if response and self.rate:
                    ahead = sent / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(min(ahead, 0.5))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _count_request(self, n: int) -> None:
        with self._lock:
            self.request_bytes += n

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
