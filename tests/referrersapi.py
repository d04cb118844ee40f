"""A stand-in for the OCI referrers API, in front of the real test registry.

Debian's distribution (2.8) predates distribution-spec 1.1, so it has no referrers API; this
HTTP proxy on 127.0.0.1 adds exactly what the spec's "Listing Referrers" and "Pushing
Manifests with Subject" sections ask of a registry, and forwards everything else untouched
to the real registry (the Host header is kept, so upload Locations point at the proxy):
- `PUT /v2/<name>/manifests/<reference>` whose body has a `subject`: forwarded; when the
  registry accepts it, the answer carries `OCI-Subject: <subject digest>` and the manifest
  is listed as a referrer of its subject;
- `GET /v2/<name>/referrers/<digest>[?artifactType=T]`: 200 with an OCI index of the
  referrers' descriptors (`artifactType`: the manifest's, else its config's media type;
  its annotations), an empty one when there are none (never 404); with `artifactType` the
  list is filtered and `OCI-Filters-Applied: artifactType` says so.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

from tests.loopbackhttp import LoopbackServer, QuietHandler

HOP = {"connection", "transfer-encoding", "keep-alive"}
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_REFERRERS = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>sha256:[a-f0-9]{64})$")
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")


class ReferrersAPI(LoopbackServer):
    def __init__(
        self, registry_port: int, page_size: int = 0, refuse: frozenset[str] = frozenset()
    ) -> None:
        """`page_size`: list at most this many referrers a page, linking the next page
        with `Link: <…>; rel="next"` as the spec allows (0: one page). `refuse`: manifest
        references whose PUT is answered 400 MANIFEST_INVALID (a test's injected fault, not
        part of the spec's behaviour)."""
        self.registry_port = registry_port
        self.page_size = page_size
        self.refuse = refuse
        # (repository, subject digest) → descriptors of its referrers
        self.referrers: dict[tuple[str, str], list[dict[str, object]]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request seen
        self._lock = threading.Lock()
        api = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                with api._lock:
                    api.requests.append((self.command, self.path))
                path, _, query = self.path.partition("?")
                found = _REFERRERS.match(path)
                if found and self.command == "GET":
                    api._list(self, found["name"], found["digest"], query)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                manifest = _MANIFEST.match(path)
                if self.command == "PUT" and manifest and manifest["reference"] in api.refuse:
                    answer = b'{"errors":[{"code":"MANIFEST_INVALID","message":"refused"}]}'
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                api._forward(self, body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        super().__init__(Handler)

    def _list(self, handler: BaseHTTPRequestHandler, name: str, digest: str, query: str) -> None:
        params = dict(urllib.parse.parse_qsl(query))
        wanted = params.get("artifactType")
        with self._lock:
            entries = list(self.referrers.get((name, digest), []))
        headers = {"Content-Type": OCI_INDEX}
        if wanted:
            entries = [e for e in entries if e.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        if self.page_size:
            page = int(params.get("page", 0))
            start = page * self.page_size
            if start + self.page_size < len(entries):
                headers["Link"] = f'</v2/{name}/referrers/{digest}?page={page + 1}>; rel="next"'
            entries = entries[start : start + self.page_size]
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        ).encode()
        handler.send_response(200)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        upstream = http.client.HTTPConnection("127.0.0.1", self.registry_port, timeout=60)
        headers = dict(handler.headers.items())
        upstream.request(handler.command, handler.path, body=body, headers=headers)
        resp = upstream.getresponse()
        extra = {}
        manifest = _MANIFEST.match(handler.path.partition("?")[0])
        if manifest and handler.command == "PUT" and resp.status == 201 and body:
            subject = self._record(manifest["name"], body, handler.headers.get("Content-Type", ""))
            if subject:
                extra["OCI-Subject"] = subject
        handler.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in HOP:
                handler.send_header(key, value)
        for key, value in extra.items():
            handler.send_header(key, value)
        if resp.getheader("Content-Length") is None and handler.command != "HEAD":
            data = resp.read()
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        else:
            handler.end_headers()
            if handler.command != "HEAD":
                while chunk := resp.read(1 << 20):
                    handler.wfile.write(chunk)
        upstream.close()

    def _record(self, name: str, body: bytes, media_type: str) -> str | None:
        try:
            doc = json.loads(body)
            subject = doc["subject"]["digest"]
        except (ValueError, KeyError, TypeError):
            return None
        entry: dict[str, object] = {
            "mediaType": doc.get("mediaType") or media_type,
            "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "size": len(body),
        }
        kind = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
        if kind:
            entry["artifactType"] = kind
        if doc.get("annotations"):
            entry["annotations"] = doc["annotations"]
        with self._lock:
            listed = self.referrers.setdefault((name, subject), [])
            if all(e["digest"] != entry["digest"] for e in listed):
                listed.append(entry)
        return str(subject)
