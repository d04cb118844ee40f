"""A transport with a handler function in place of the network, for unit tests of the registry
client's state machines (uploads, resumed downloads) with no registry running.

The shape is httpx's `MockTransport`: `MockTransport(handler)` calls `handler(request)` for
every request and sends back the `MockResponse` it returns. A handler that raises an OSError
(ConnectionResetError, TimeoutError…) is a request that got no answer: the error reaches the
client mapped as the real transports map it (`transport.failure`). A response made with
`cut_after=N` breaks off after N bytes of its body, as a dropped connection does.

`BlobRegistry` is a handler that stands in for a registry's blob endpoints, following
distribution-spec 1.1 ("Pulling blobs", "Pushing blobs": POST, PATCH with Content-Range,
GET on the session answering 204 with `Range: 0-N`, PUT ?digest=, DELETE, HEAD, mounts).
It holds only what the state machines touch; everything else is the real registry's job
in tests/functional. Faults are scripted per test through its attributes.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from occystrap.reference import digest_of
from occystrap.registry.bodies import EncodedAnswer, FileRegion, check_identity
from occystrap.registry.transport import Body, Response, encoded, failure


class Headers(dict[str, str]):
    """Case-insensitive header lookups, as both real transports give."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__({k.lower(): v for k, v in (items or {}).items()})

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class MockRequest:
    """What the client sent; a FileRegion body is read (its progress callback runs)."""

    method: str
    url: str
    headers: Headers
    body: bytes

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.url).path

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query))


@dataclass
class MockResponse:
    """An answer; `cut_after` bytes of `body` are served, then the connection breaks."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None
    reason: str = "Mock"


class Answer:
    """A MockResponse behind the `transport.Response` protocol."""

    def __init__(self, answer: MockResponse, url: str) -> None:
        self.status = answer.status
        self.reason = answer.reason
        self.headers: Mapping[str, str] = Headers(
            {"Content-Length": str(len(answer.body)), **answer.headers}
        )
        self.url = url
        self._body = answer.body
        self._cut = answer.cut_after
        self.closed = False

    def _pieces(self, size: int) -> Iterator[bytes]:
        served = self._body if self._cut is None else self._body[: self._cut]
        for pos in range(0, len(served), size):
            yield served[pos : pos + size]
        if self._cut is not None:
            raise failure(ConnectionResetError(104, "Connection reset by peer"))

    def read(self, cap: int) -> bytes:
        try:
            check_identity(self.headers)
        except EncodedAnswer as exc:
            raise encoded(self.url, exc) from None
        data = b"".join(self._pieces(cap + 1))
        return data[: cap + 1]

    def chunks(self, buffer: bytearray, limit: int) -> Iterator[memoryview | bytes]:
        for piece in self._pieces(len(buffer)):
            if len(piece) >= limit:
                yield piece[:limit]
                return
            limit -= len(piece)
            yield piece

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


Handler = Callable[[MockRequest], MockResponse]


class MockTransport:
    """`transport.Transport` over `handler`; `requests` logs every request, in order."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: Body = None
    ) -> Response:
        data = b"".join(body.chunks()) if isinstance(body, FileRegion) else (body or b"")
        request = MockRequest(method, url, Headers(headers), data)
        self.requests.append(request)
        try:
            answer = self.handler(request)
        except OSError as exc:
            raise failure(exc) from exc
        return Answer(answer, url)

    def close(self) -> None:
        pass

    def log(self) -> list[str]:
        """`METHOD path` of every request so far."""
        return [f"{r.method} {r.path}" for r in self.requests]


_SESSION = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[a-f0-9]{64})$")


@dataclass
class BlobRegistry:
    """The blob endpoints of a registry in memory (see the module docstring).

    Scripted faults: `break_patch` (chunk numbers, from 1, whose connection breaks after
    `keep` bytes were stored: the registry holds them, the client never hears back),
    `lose_sessions` (session GETs answered 404, as after distribution cancels one),
    `refuse_mount` (a mount answered 202 with a new session), `blob_fault(request)` (an
    answer in place of a blob GET's, or None).
    """

    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    sessions: dict[str, bytearray] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    break_patch: set[int] = field(default_factory=set)
    keep: int = 0
    lose_sessions: bool = False
    refuse_mount: bool = False
    blob_fault: Callable[[MockRequest], MockResponse | None] | None = None
    patches: int = 0
    _next: int = 0

    def __call__(self, request: MockRequest) -> MockResponse:
        method = request.method
        if (match := _SESSION.match(request.path)) is not None:
            name, sid = match["name"], match["id"]
            if method == "POST" and not sid:
                return self._start(name, request.query)
            return self._session(method, name, sid, request)
        if (match := _BLOB.match(request.path)) is not None:
            data = self.blobs.get((match["name"], match["digest"]))
            if data is None:
                return MockResponse(404)
            if method == "HEAD":
                return MockResponse(200, {"Content-Length": str(len(data))})
            fault = self.blob_fault(request) if self.blob_fault else None
            return fault or _ranged(data, request.headers.get("range"))
        return MockResponse(404)

    def _start(self, name: str, query: dict[str, str]) -> MockResponse:
        if "mount" in query:
            source = self.blobs.get((query.get("from", ""), query["mount"]))
            if source is not None and not self.refuse_mount:
                self.blobs[(name, query["mount"])] = source
                return MockResponse(201)
        self._next += 1
        sid = f"s{self._next}"
        self.sessions[sid] = bytearray()
        return MockResponse(
            202, {"Location": f"/v2/{name}/blobs/uploads/{sid}?_state=x{sid}", "Range": "0-0"}
        )

    def _session(self, method: str, name: str, sid: str, request: MockRequest) -> MockResponse:
        held = self.sessions.get(sid)
        if held is None or (method == "GET" and self.lose_sessions):
            return MockResponse(404)
        here = {"Location": f"/v2/{name}/blobs/uploads/{sid}?_state=y{len(held)}"}
        if method == "DELETE":
            del self.sessions[sid]
            self.deleted.append(sid)
            return MockResponse(204)
        if method == "GET":
            return MockResponse(204, {**here, "Range": f"0-{max(len(held) - 1, 0)}"})
        if method == "PATCH":
            self.patches += 1
            start = int(request.headers["content-range"].split("-")[0])
            if start != len(held):
                return MockResponse(416)
            if self.patches in self.break_patch:
                held += request.body[: self.keep]
                raise ConnectionResetError(104, "Connection reset by peer")
            held += request.body
            return MockResponse(
                202,
                {
                    "Location": f"/v2/{name}/blobs/uploads/{sid}?_state=y{len(held)}",
                    "Range": f"0-{len(held) - 1}",
                },
            )
        if method == "PUT":
            held += request.body
            digest = request.query.get("digest", "")
            if digest_of(bytes(held)) != digest:
                return MockResponse(
                    400,
                    body=b'{"errors": [{"code": "DIGEST_INVALID", '
                    b'"message": "digest did not match"}]}',
                )
            del self.sessions[sid]
            self.blobs[(name, digest)] = bytes(held)
            return MockResponse(201, {"Docker-Content-Digest": digest})
        return MockResponse(405)


def _ranged(data: bytes, wanted: str | None) -> MockResponse:
    """A blob GET, honouring `Range: bytes=N-` with a 206 (RFC 9110 §14)."""
    match = re.match(r"^bytes=(\d+)-$", wanted or "")
    if not match:
        return MockResponse(200, {}, data)
    start = int(match[1])
    return MockResponse(
        206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, data[start:]
    )
