"""An HTTP proxy on 127.0.0.1 in front of the real test registry (or any server on loopback)
that misbehaves on a script: each rule matches a method and a path pattern, fires a given
number of times, and makes the answer fail in one way. Everything else is forwarded
untouched, so the registry behind it stays the real one. With `tls=(cert, key)` it serves
HTTPS (a hostile https registry in front of a plain one).

Actions:
- `status`: answer `status` with `headers` and no body;
- `wrong_bytes`, `truncate`: the upstream body XOR-ed, or cut short under a full
  Content-Length;
- `body`: answer `status` with `body` and `headers` (`{n}` in a header value becomes the
  number of times the rule fired: links to ever new URLs);
- `add_headers`: the upstream answer with `headers` added (RateLimit-Remaining: 0, …);
- `bomb`: a 200 whose body is `size` zero bytes compressed with `encoding` (zstd: 1 GiB
  in about 32 KiB), sent with that Content-Encoding;
- `bad_encoding`: the upstream body as is, but claiming `Content-Encoding: gzip`;
- `overlong`: the upstream body under a Content-Length `extra` bytes larger, and then
  silence until the client gives up (a blob longer than its descriptor says).

`unless_header` makes a rule fire only on requests without that header (a 401 until the
client authenticates). `seen` records (method, path, headers) of every request.
"""

from __future__ import annotations

import functools
import http.client
import random
import re
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP = {"connection", "transfer-encoding", "keep-alive"}


@dataclass
class Rule:
    method: str
    path: str  # a regular expression searched in the request path
    action: str  # see the module docstring
    times: int = 1
    status: int = 503
    headers: dict[str, str] | None = None
    fired: int = 0
    chance: float | None = None  # fire at random with this probability (seeded), not `times`
    body: bytes = b""
    encoding: str = "zstd"  # bomb
    size: int = 2**30  # bomb: bytes once decoded
    extra: int = 0  # overlong
    unless_header: str | None = None


@functools.lru_cache(maxsize=4)
def bomb(encoding: str, size: int) -> bytes:
    """`size` zero bytes compressed with `encoding` ("zstd" or "gzip"), made in a stream."""
    import zlib

    import zstandard

    block = bytes(2**20)
    if encoding == "zstd":
        comp = zstandard.ZstdCompressor(level=1).compressobj()
        parts = [comp.compress(block) for _ in range(size // len(block))]
        return b"".join(parts) + comp.flush()
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [gz.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + gz.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is in the script
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class HTTPFaults:
    def __init__(
        self, registry_port: int, rules: list[Rule], tls: tuple[Path, Path] | None = None
    ) -> None:
        self.rules = rules
        self.registry_port = registry_port
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._random = random.Random(1234)
        self._hang = threading.Event()
        faults = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                with faults._lock:
                    faults.seen.append((self.command, self.path, dict(self.headers.items())))
                rule = faults._match(self.command, self.path, self.headers)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if rule is not None and rule.action in ("status", "body", "bomb"):
                    data = rule.body if rule.action == "body" else b""
                    headers = dict(rule.headers or {})
                    if rule.action == "bomb":
                        data = bomb(rule.encoding, rule.size)
                        headers["Content-Encoding"] = rule.encoding
                    self.send_response(200 if rule.action == "bomb" else rule.status)
                    for k, v in headers.items():
                        self.send_header(k, v.replace("{n}", str(rule.fired)))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", faults.registry_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
                data = resp.read() if self.command != "HEAD" else b""
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                if rule is not None and rule.action == "add_headers":
                    for k, v in (rule.headers or {}).items():
                        self.send_header(k, v)
                if rule is not None and rule.action == "bad_encoding":
                    self.send_header("Content-Encoding", "gzip")
                size = int(resp.getheader("Content-Length") or len(data))
                if rule is not None and rule.action == "overlong":
                    size += rule.extra
                self.send_header("Content-Length", str(size))
                self.end_headers()
                upstream.close()
                if rule is not None and rule.action == "overlong":
                    self.wfile.write(data)
                    self.wfile.flush()
                    faults._hang.wait(30)  # the rest never comes
                    self.close_connection = True
                    return
                if rule is not None and rule.action == "wrong_bytes":
                    data = bytes(b ^ 0x5A for b in data)
                if rule is not None and rule.action == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = _Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _match(self, method: str, path: str, headers: object = None) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method != method or not re.search(rule.path, path):
                    continue
                if rule.unless_header and headers is not None and headers.get(rule.unless_header):  # type: ignore[attr-defined]
                    continue
                if rule.chance is not None:
                    if self._random.random() < rule.chance:
                        rule.fired += 1
                        return rule
                elif rule.fired < rule.times:
                    rule.fired += 1
                    return rule
        return None

    def requests_to(self, pattern: str) -> int:
        """How many requests had a path matching `pattern`."""
        with self._lock:
            return sum(1 for _, path, _ in self.seen if re.search(pattern, path))

    def close(self) -> None:
        self._hang.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HTTPFaults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
