"""A stand-in for the Quay.io REST API v1 (Quay cannot run here), on 127.0.0.1.

It follows Quay's documented API as occystrap uses it: `GET /api/v1/repository?namespace=`
paginated with an opaque `next_page` token and `last_modified` (epoch seconds) per
repository, and `GET /api/v1/repository/NS/NAME/tag/?specificTag=&onlyActiveTags=` answering
`{"tags": [{"name", "start_ts", "manifest_digest", ...}], "page", "has_additional"}`. Requests
under `/v2/` are forwarded to the real test registry, as quay.io serves both from one host.

For the connection options: `tls_dir` serves HTTPS with a certificate from a throwaway CA
(`ca_file`), `throttle=N` answers the first N API requests `429 Too Many Requests` with
`Retry-After: 1` (as quay.io's rate limiter does), and every request's arrival time is kept
in `request_times`, every API answer's status in `api_statuses`.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tools.testregistry import write_tls_files

PAGE = 2  # small pages, so pagination is exercised


class QuayStandIn:
    def __init__(
        self,
        registry_port: int,
        namespace: str,
        repos: dict[str, int],
        tags: dict[str, dict[str, int]],
        token: str | None = None,
        tls_dir: Path | None = None,
        throttle: int = 0,
    ) -> None:
        """`repos`: name → last_modified; `tags`: name → {tag: start_ts}."""
        stand_in = self
        self.request_times: list[float] = []
        self.api_statuses: list[int] = []
        self._throttle = throttle
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                with stand_in._lock:
                    stand_in.request_times.append(time.monotonic())
                    throttled = not url.path.startswith("/v2/") and stand_in._throttle > 0
                    stand_in._throttle -= throttled
                if url.path.startswith("/v2/"):
                    stand_in._forward(self)
                    return
                if throttled:
                    self._json(429, {"error": "rate limited"}, {"Retry-After": "1"})
                    return
                if token and self.headers.get("Authorization") != f"Bearer {token}":
                    self._json(401, {"error": "unauthorized"})
                    return
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/api/v1/repository":
                    if query.get("namespace") != namespace:
                        self._json(200, {"repositories": []})
                        return
                    names = sorted(repos)
                    start = int(query.get("next_page", "0") or 0)
                    page = names[start : start + PAGE]
                    doc: dict[str, object] = {
                        "repositories": [
                            {
                                "namespace": namespace,
                                "name": n,
                                "last_modified": repos[n],
                                "is_public": True,
                                "kind": "image",
                            }
                            for n in page
                        ]
                    }
                    if start + PAGE < len(names):
                        doc["next_page"] = str(start + PAGE)
                    self._json(200, doc)
                    return
                prefix = f"/api/v1/repository/{namespace}/"
                if url.path.startswith(prefix) and url.path.endswith("/tag/"):
                    name = url.path[len(prefix) : -len("/tag/")]
                    if name not in repos:
                        self._json(404, {"error": "not found"})
                        return
                    wanted = query.get("specificTag")
                    found = [
                        {
                            "name": t,
                            "start_ts": ts,
                            "reversion": False,
                            "manifest_digest": "sha256:" + "0" * 64,
                        }
                        for t, ts in tags.get(name, {}).items()
                        if wanted is None or t == wanted
                    ]
                    self._json(200, {"tags": found, "page": 1, "has_additional": False})
                    return
                self._json(404, {"error": "not found"})

            def _json(
                self, status: int, doc: object, headers: dict[str, str] | None = None
            ) -> None:
                body = json.dumps(doc).encode()
                with stand_in._lock:
                    stand_in.api_statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        self.registry_port = registry_port
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.ca_file: str | None = None
        if tls_dir is not None:
            ca, cert, key = write_tls_files(tls_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.ca_file = str(ca)
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls_dir else 'http'}://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        upstream = http.client.HTTPConnection("127.0.0.1", self.registry_port, timeout=60)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        upstream.request(handler.command, handler.path, headers=headers)
        resp = upstream.getresponse()
        handler.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("connection", "transfer-encoding"):
                handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            while chunk := resp.read(1 << 20):
                handler.wfile.write(chunk)
        upstream.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> QuayStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
