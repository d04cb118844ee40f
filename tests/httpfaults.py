"""An HTTP proxy on 127.0.0.1 in front of the real test registry that misbehaves on a script:
each rule matches a method and a path pattern, fires a given number of times, and makes the
answer fail in one way (a status, wrong bytes, a body cut short under a full Content-Length).
Everything else is forwarded untouched, so the registry behind it stays the real one."""

from __future__ import annotations

import http.client
import random
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "transfer-encoding", "keep-alive"}


@dataclass
class Rule:
    method: str
    path: str  # a regular expression searched in the request path
    action: str  # "status" | "wrong_bytes" | "truncate"
    times: int = 1
    status: int = 503
    headers: dict[str, str] | None = None
    fired: int = 0
    chance: float | None = None  # fire at random with this probability (seeded), not `times`


class HTTPFaults:
    def __init__(self, registry_port: int, rules: list[Rule]) -> None:
        self.rules = rules
        self.registry_port = registry_port
        self._lock = threading.Lock()
        self._random = random.Random(1234)
        faults = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                rule = faults._match(self.command, self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if rule is not None and rule.action == "status":
                    self.send_response(rule.status)
                    for k, v in (rule.headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", faults.registry_port,
                                                      timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
                data = resp.read() if self.command != "HEAD" else b""
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                size = int(resp.getheader("Content-Length") or len(data))
                self.send_header("Content-Length", str(size))
                self.end_headers()
                upstream.close()
                if rule is not None and rule.action == "wrong_bytes":
                    data = bytes(b ^ 0x5A for b in data)
                if rule is not None and rule.action == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method != method or not re.search(rule.path, path):
                    continue
                if rule.chance is not None:
                    if self._random.random() < rule.chance:
                        rule.fired += 1
                        return rule
                elif rule.fired < rule.times:
                    rule.fired += 1
                    return rule
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HTTPFaults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
