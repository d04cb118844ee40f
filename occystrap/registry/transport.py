"""The transport seam: one `send` every registry request goes through, and what it returns.

`Transport.send(method, url, headers, body) -> Response` sends one request and returns the
answer's head; the body is read from the `Response` (`read` for small bodies within a cap,
`chunks` for blobs), and `close` must be called on every response (it hands the connection
back when the body was read to the end). No auth, redirects, retries or rate limits here:
those are layers around the seam (`flow.py`). Failures are mapped to the error tree in one
place (`errors.from_library(..., network=True)`): a TransientError (retryable) or a
RegistryError (TLS verification, a request that is not valid HTTP), the reason never
quoting a URL or a header; only a body file that ends early raises `ShortSource`.

`open_transport` makes the one implementation a client uses, `RoutingTransport`: the pooled
`HTTPTransport` below (http.client, its answers `pooled.PooledResponse`, reading into a
reused 1 MiB buffer, `sendfile` for file bodies: measured 1.4–2.5× faster than httpx
`iter_raw` over loopback, since at several hundred MB/s per-chunk Python overhead is the
bottleneck), and `proxy.HttpxTransport` for
URLs the environment routes through a proxy (only httpx honours proxies). The choice is
per URL and nobody else's: callers never pick a stack.
"""

from __future__ import annotations

import http.client
import os
import select
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

__all__ = [
    "BLOB_BUFFER",
    "Body",
    "FileRegion",
    "HTTPTransport",
    "Response",
    "RoutingTransport",
    "ShortSource",
    "Transport",
    "encoded",
    "failure",
    "open_transport",
    "proxied",
]

from occystrap import __version__
from occystrap.registry.bodies import (
    BLOB_BUFFER,
    FileRegion,
    ShortSource,
)
from occystrap.registry.pooled import PooledResponse, encoded, failure
from occystrap.registry.urls import Origin, origin


class Response(Protocol):
    """An answer's head, and its body on demand. The caller must `close` it."""

    status: int
    reason: str
    url: str  # where it came from (after no redirects: the transport follows none)

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive `get`, like httpx.Headers."""
        ...

    def read(self, cap: int) -> bytes:
        """Up to `cap` + 1 bytes of the body as they came over the wire (so `len > cap`
        says it was too large); RegistryError when the answer is encoded although identity
        was asked for (asking again gets the same answer), TransientError when it breaks."""
        ...

    def chunks(self, buffer: bytearray, limit: int) -> Iterator[memoryview | bytes]:
        """The body in pieces read into `buffer` (valid until the next piece), `limit` bytes
        at most: nothing past it is waited for. TransientError when it breaks off."""
        ...

    def close(self) -> None:
        """Release the connection: kept when the body was read (small ones are drained)."""
        ...

    def abort(self) -> None:
        """Close without reading the rest: the connection is not reused."""
        ...


Body = bytes | FileRegion | None


class Transport(Protocol):
    """Sends one request; thread-safe. The resource rule: every Response is closed."""

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: Body = None
    ) -> Response: ...

    def close(self) -> None: ...


# A context, or how to make one on first need: loading the CA store costs some 20 ms a
# process, which a run that only speaks plain HTTP (or only to local paths) should not pay.
TLSContext = ssl.SSLContext | Callable[[], ssl.SSLContext]


def tls(context: TLSContext) -> ssl.SSLContext:
    return context if isinstance(context, ssl.SSLContext) else context()


class HTTPTransport:
    """Keep-alive http.client connections. An HTTPConnection serves one request at a time, so
    a thread takes an idle one, uses it, and hands it back. The idle set is shared by all
    threads (not per thread): download threads come and go with each image, and per-thread
    connections would stay open after their threads ended (the soak test saw the descriptor
    count grow with the number of images)."""

    MAX_IDLE = 16  # per origin; more would only be sockets nobody uses

    def __init__(self, ssl_context: TLSContext, timeout: float) -> None:
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._lock = threading.Lock()
        self._idle_conns: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._all: set[http.client.HTTPConnection] = set()
        self._closed = False

    def _take(self, key: Origin) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle_conns.get(key)
            return idle.pop() if idle else None

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: Body = None
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        key = origin(url)
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        conn = self._take(key)
        streamed = isinstance(body, FileRegion)
        if conn is not None and streamed and _dropped(conn):
            # A blob chunk must not be sent twice blindly (see below), so weed out idle
            # connections the server has closed before sending, not after.
            self._discard(conn)
            conn = None
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect(key)
            try:
                if isinstance(body, FileRegion):
                    conn.request(method, target, headers=dict(headers))
                    response = self._stream_region(conn, body)
                else:
                    conn.request(method, target, body=body, headers=dict(headers))
                    response = conn.getresponse()
            except ShortSource:
                self._discard(conn)
                raise
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # ValueError: an illegal header value or URL, never sent.
                self._discard(conn)
                # A kept-alive connection the server already closed is not a failure, unless
                # part of a blob went out: the registry may hold it, and only the caller can
                # ask where the upload stands.
                if reused and not streamed and isinstance(exc, _STALE):
                    conn, reused = None, False
                    continue
                raise failure(exc) from None if isinstance(exc, ValueError) else exc
            except BaseException:
                # The body's source gave up mid-request (a blob in flight whose image
                # failed): the connection is half-way through a request, never to be reused.
                self._discard(conn)
                raise
            if method == "HEAD":
                response.read()
            return PooledResponse(response, conn, self._release, url)

    @staticmethod
    def _stream_region(
        conn: http.client.HTTPConnection, region: FileRegion
    ) -> http.client.HTTPResponse:
        """Send the body after the headers; if sending breaks, still read an early answer.

        A registry that refuses an upload (401, 400, 413) may answer and close before taking
        the whole body; its answer explains the failure better than "connection reset" does.
        """
        try:
            region.send(conn.sock)
        except OSError as exc:
            try:
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                raise exc from None
            if 200 <= response.status < 300:
                # A success for a body we did not finish sending cannot be trusted.
                response.close()
                raise exc from None
            response.will_close = True
            return response
        return conn.getresponse()

    def _connect(self, key: Origin) -> http.client.HTTPConnection:
        scheme, host, port = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=tls(self._ssl_context)
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        with self._lock:
            self._all.add(conn)
        return conn

    def _release(self, conn: http.client.HTTPConnection, reusable: bool) -> None:
        if reusable and not self._closed:
            scheme = "https" if isinstance(conn, http.client.HTTPSConnection) else "http"
            key = (scheme, conn.host.lower(), conn.port)
            with self._lock:
                idle = self._idle_conns.setdefault(key, [])
                if len(idle) < self.MAX_IDLE:
                    idle.append(conn)
                    return
        self._discard(conn)

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            self._all.discard(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, set()
        for conn in conns:
            conn.close()


_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle keep-alive connection was closed by the peer (EOF or stray bytes)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def proxy_variables() -> bool:
    """Is any *_proxy variable set? Only then can the environment route a URL through a
    proxy (on Linux urllib.request reads nothing else)."""
    return any(name[-6:].lower() == "_proxy" for name in os.environ)


def proxied(url: str) -> bool:
    """True when the environment routes `url` through a proxy; only httpx honours proxies.
    urllib.request knows the rules (*_proxy, no_proxy); it is loaded on first need."""
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class RoutingTransport:
    """The transport of a registry client: a proxied URL goes through httpx (made on first
    need), every other through the pooled HTTPTransport. Both share one SSLContext."""

    def __init__(self, ssl_context: TLSContext, timeout: float, pool_size: int) -> None:
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._pool_size = pool_size
        self._direct = HTTPTransport(ssl_context, timeout)
        self._proxy: Transport | None = None
        # Read once per transport: walking os.environ on every request cost 0.1 ms each.
        self._proxy_variables = proxy_variables()
        self._lock = threading.Lock()

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: Body = None
    ) -> Response:
        # Every request says who sends it (registries log it; some refuse anonymous agents).
        if "User-Agent" not in headers:
            headers = {**headers, "User-Agent": USER_AGENT}
        if self._proxy_variables and proxied(url):
            return self._via_proxy().send(method, url, headers, body)
        return self._direct.send(method, url, headers, body)

    def _via_proxy(self) -> Transport:
        with self._lock:
            if self._proxy is None:
                from occystrap.registry.proxy import HttpxTransport

                self._proxy = HttpxTransport(tls(self._ssl_context), self._timeout, self._pool_size)
            return self._proxy

    def close(self) -> None:
        self._direct.close()
        with self._lock:
            if self._proxy is not None:
                self._proxy.close()


USER_AGENT = f"occystrap/{__version__} (+https://pypi.org/project/occystrap/)"


def open_transport(ssl_context: TLSContext, timeout: float, pool_size: int) -> Transport:
    """The transport a registry client sends everything through."""
    return RoutingTransport(ssl_context, timeout, pool_size)
