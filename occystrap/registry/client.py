"""The registry transport: one request path with auth, retries, redirects, and a fast blob path.

Small requests (manifests, configs, tokens) go through httpx. Blob bodies go through
`http.client` reading into a reused 1 MiB buffer, because that measured about 1.5x faster than
httpx `iter_raw` over loopback on this machine (see the module's tests and the design notes);
at several hundred MB/s the per-chunk Python overhead is the bottleneck, not the network.
Both paths share the same TLS context, the same credentials and the same token cache, and go
through the same `_request` loop, so auth and retry behaviour cannot drift apart.

Nothing here logs or raises with a token, a password, or a URL query string (pre-signed
storage URLs and upload `_state` carry secrets in the query).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import logging
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

import httpx

from occystrap.errors import (
    AuthError,
    DestinationError,
    DigestError,
    ManifestError,
    NotFoundError,
    OccystrapError,
    RegistryError,
    TransientError,
    UsageError,
)
from occystrap.redaction import redact_url as _redact
from occystrap.reference import DIGEST_RE, NAME_RE, TAG_RE
from occystrap.registry import ratelimit
from occystrap.registry.auth import (
    Credentials,
    TokenCache,
    basic_header,
    fetch_token,
    parse_challenges,
    validate_realm,
)
from occystrap.registry.bodies import IDENTITY, EncodedAnswer, check_identity, read_raw
from occystrap.registry.paging import PageGuard
from occystrap.registry.retry import RETRYABLE_STATUS, backoff_delay, parse_retry_after

log = logging.getLogger(__name__)

MAX_MANIFEST_SIZE = 4 * 2**20
MAX_ERROR_BODY = 64 * 2**10
MAX_REDIRECTS = 5
BLOB_BUFFER = 2**20
SENDFILE_SLICE = 8 * 2**20
# Blobs above this go up in chunks (PATCH) so a broken connection costs one chunk, not the
# blob; below it one PUT is two requests in all (monolithic measured 290 MB/s against 245
# chunked into the local registry, which also spends less CPU on it). Module constants so
# tests can shrink them.
CHUNKED_THRESHOLD = 256 * 2**20
CHUNK_SIZE = 32 * 2**20
UPLOAD_CONTENT_TYPE = "application/octet-stream"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class RequestCounters:
    """What this process asked of registries, for the statistics report.

    One instance per process (`COUNTERS`); each stage process reads and resets its own after
    the fork, so the report can say which stage made the requests, retried or was throttled.
    Counting is a dict update under a lock: noise next to an HTTP round trip.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: dict[str, int] = {}  # host (of the URL actually sent to) → count
            self.retries = 0
            self.throttled = 0  # 429 answers
            self.bytes_received = 0  # blob bodies
            self.bytes_sent = 0  # blob uploads, resent parts included
            self.mounts = 0
            self.pauses = 0  # waits over a second (ratelimit.NOTICE_AFTER), each said
            self.paused_seconds = 0.0

    def request(self, url: str) -> None:
        host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
        with self._lock:
            self.requests[host] = self.requests.get(host, 0) + 1

    def add(self, field: str, n: float = 1) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + n)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"requests": dict(self.requests), "retries": self.retries,
                    "throttled": self.throttled, "bytes_received": self.bytes_received,
                    "bytes_sent": self.bytes_sent, "mounts": self.mounts,
                    "pauses": self.pauses, "paused_seconds": self.paused_seconds}


COUNTERS = RequestCounters()


@dataclass(frozen=True)
class ManifestResponse:
    body: bytes
    media_type: str
    digest: str
    size: int


class _TransportFailure(Exception):
    """A request that never produced a usable answer; `retryable` is False for TLS failures."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Budget:
    """Failures allowed for one logical operation, shared by its requests and resumes."""

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.used = 0

    @property
    def attempts(self) -> int:
        return self.used + 1

    def exhausted(self) -> bool:
        return self.used >= self.retries


def _describe(exc: BaseException) -> str:
    """A one-line cause for a transport error; never includes URLs (they may carry secrets)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate verification failed ({exc.verify_message}); for a registry "
                f"with its own CA use --ca-file, or --no-tls-verify")
    if isinstance(exc, httpx.LocalProtocolError | ValueError):
        # h11 and http.client quote the offending header value, which may be a token.
        return "the request is not valid HTTP (a header value or the URL; not shown)"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes of the body"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    text = str(exc).strip()
    if isinstance(exc, httpx.TransportError):
        cause = exc.__cause__ or exc.__context__
        if cause is not None and isinstance(cause, ssl.SSLCertVerificationError):
            return _describe(cause)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return ("TLS certificate verification failed; for a registry with its own CA use "
                    "--ca-file, or --no-tls-verify")
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _is_tls_failure(exc: BaseException) -> bool:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    cause = exc.__cause__ or exc.__context__
    if cause is not None and isinstance(cause, ssl.SSLCertVerificationError):
        return True
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


class _Response:
    """What `_request` hands back, whichever library produced it."""

    status: int
    reason: str
    headers: Mapping[str, str]
    url: str

    def read(self, cap: int) -> bytes:
        raise NotImplementedError

    def chunks(self, buffer: bytearray, limit: int) -> Iterator[memoryview | bytes]:
        """The body in pieces, `limit` bytes at most: nothing past it is waited for."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Close without reading the rest: the connection is not reused."""
        self.close()


class _HttpxResponse(_Response):
    def __init__(self, response: httpx.Response, url: str) -> None:
        self._response = response
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.headers = response.headers
        self.url = url

    def read(self, cap: int) -> bytes:
        """Up to `cap` + 1 bytes as they came over the wire (see `bodies`); an encoded
        answer is a RegistryError, not a retry: asking again gets the same answer."""
        try:
            check_identity(self.headers)
        except EncodedAnswer as exc:
            raise RegistryError(f"GET {_redact(self.url)}: {exc.describe()}") from None
        try:
            return read_raw(self._response.iter_raw(), cap)
        except httpx.TransportError as exc:
            raise _TransportFailure(_describe(exc)) from exc

    def chunks(self, buffer: bytearray, limit: int) -> Iterator[memoryview | bytes]:
        try:
            for chunk in self._response.iter_raw(len(buffer)):
                if len(chunk) >= limit:
                    yield chunk[:limit]
                    return
                limit -= len(chunk)
                yield chunk
        except httpx.TransportError as exc:
            raise _TransportFailure(_describe(exc)) from exc

    def close(self) -> None:
        self._response.close()


class _RawResponse(_Response):
    """An http.client response that puts its connection back in the pool once fully read."""

    def __init__(
        self,
        response: http.client.HTTPResponse,
        conn: http.client.HTTPConnection,
        release: Callable[[http.client.HTTPConnection, bool], None],
        url: str,
    ) -> None:
        self._response = response
        self._conn = conn
        self._release = release
        self._released = False
        self.status = response.status
        self.reason = response.reason
        self.headers = _HeaderView(response.headers)
        self.url = url

    def read(self, cap: int) -> bytes:
        try:
            data = self._response.read(cap + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise _TransportFailure(_describe(exc)) from exc
        return data

    def chunks(self, buffer: bytearray, limit: int) -> Iterator[memoryview | bytes]:
        view = memoryview(buffer)
        response = self._response
        readinto = response.readinto
        received = 0
        try:
            while received < limit:
                n = readinto(buffer if limit - received >= len(buffer)
                             else view[: limit - received])
                if not n:
                    # http.client reports an early close as a normal end: check the length.
                    if response.length:
                        raise _TransportFailure(
                            f"connection closed after {received} bytes of the body"
                        )
                    return
                received += n
                yield view[:n]
        except (OSError, http.client.HTTPException) as exc:
            raise _TransportFailure(_describe(exc)) from exc

    def abort(self) -> None:
        if not self._released:
            self._released = True
            self._response.close()
            self._release(self._conn, False)

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        remaining = self._response.length
        if remaining is not None and 0 <= remaining <= MAX_ERROR_BODY:
            # Drain a small unread body (a 401 or redirect page) to keep the connection; an
            # empty one (a 202 or 204 of an upload) too, or http.client never marks it done.
            try:
                self._response.read()
            except (OSError, http.client.HTTPException):
                pass
        # Reusable only when the body was consumed to the end and the server keeps it open.
        reusable = self._response.isclosed() and not self._response.will_close
        if not reusable:
            self._response.close()
        self._release(self._conn, reusable)


class _HeaderView(Mapping[str, str]):
    """Case-insensitive `get` over http.client's message, like httpx.Headers."""

    def __init__(self, message: http.client.HTTPMessage) -> None:
        self._message = message

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self._message.get(key)
        return default if value is None else value

    def __getitem__(self, key: str) -> str:
        value = self._message.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._message.keys())

    def __len__(self) -> int:
        return len(self._message)


class _RawPool:
    """Keep-alive http.client connections. An HTTPConnection serves one request at a time, so
    a thread takes an idle one, uses it, and hands it back. The idle set is shared by all
    threads (not per thread): download threads come and go with each image, and per-thread
    connections would stay open after their threads ended (the soak test saw the descriptor
    count grow with the number of images)."""

    MAX_IDLE = 16  # per origin; more would only be sockets nobody uses

    def __init__(self, ssl_context: ssl.SSLContext, timeout: float) -> None:
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._lock = threading.Lock()
        self._idle_conns: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._all: set[http.client.HTTPConnection] = set()
        self._closed = False

    def _take(self, key: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle_conns.get(key)
            return idle.pop() if idle else None

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | _Region | None = None,
    ) -> _RawResponse:
        parts = urllib.parse.urlsplit(url)
        key = _origin(url)
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        conn = self._take(key)
        streamed = isinstance(body, _Region)
        if conn is not None and streamed and _dropped(conn):
            # A blob chunk must not be sent twice blindly (see below), so weed out idle
            # connections the server has closed before sending, not after.
            conn.close()
            self._forget(conn)
            conn = None
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._connect(key)
            try:
                if isinstance(body, _Region):
                    conn.request(method, target, headers=dict(headers))
                    response = self._stream_region(conn, body)
                else:
                    conn.request(method, target, body=body, headers=dict(headers))
                    response = conn.getresponse()
            except _ShortSource:
                conn.close()
                self._forget(conn)
                raise
            except ValueError as exc:  # an illegal header value or URL: never sent
                conn.close()
                self._forget(conn)
                raise _TransportFailure(_describe(exc), retryable=False) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._forget(conn)
                # A kept-alive connection the server already closed is not a failure, unless
                # part of a blob went out: the registry may hold it, and only the caller can
                # ask where the upload stands.
                if (
                    reused
                    and not streamed
                    and isinstance(
                        exc,
                        (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError),
                    )
                ):
                    conn, reused = None, False
                    continue
                raise _TransportFailure(_describe(exc), retryable=not _is_tls_failure(exc)) from exc
            if method == "HEAD":
                response.read()
            return _RawResponse(response, conn, self._release, url)

    @staticmethod
    def _stream_region(
        conn: http.client.HTTPConnection, region: _Region
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

    def _connect(self, key: tuple[str, str, int]) -> http.client.HTTPConnection:
        scheme, host, port = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self._ssl_context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        with self._lock:
            self._all.add(conn)
        return conn

    def _release(self, conn: http.client.HTTPConnection, reusable: bool) -> None:
        if reusable and not self._closed:
            host = conn.host.lower()
            scheme = "https" if isinstance(conn, http.client.HTTPSConnection) else "http"
            key = (scheme, host, conn.port)
            with self._lock:
                idle = self._idle_conns.setdefault(key, [])
                if len(idle) < self.MAX_IDLE:
                    idle.append(conn)
                    return
        conn.close()
        self._forget(conn)

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._all.discard(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, set()
        for conn in conns:
            conn.close()


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


@dataclass(frozen=True)
class _Region:
    """Bytes [offset, offset+size) of a file, sent as a request body without loading them.

    Plain HTTP uses sendfile (the kernel copies page cache to socket); TLS reads 1 MiB at a
    time into one reused buffer, since sendfile cannot encrypt. Either way memory stays flat
    however big the blob or the tarball it lives in.
    """

    path: str
    offset: int
    size: int
    on_progress: Callable[[int], None] | None = None

    def send(self, sock: socket.socket | None) -> None:
        if sock is None:
            raise ConnectionError("connection closed before the body was sent")
        report = self.on_progress
        pos, end = self.offset, self.offset + self.size
        with open(self.path, "rb") as f:
            if not isinstance(sock, ssl.SSLSocket):
                while pos < end:
                    n = sock.sendfile(f, pos, min(SENDFILE_SLICE, end - pos))
                    if not n:
                        raise _ShortSource(f"{self.path} ends before byte {end}")
                    pos += n
                    if report is not None:
                        report(n)
                return
            buffer = bytearray(BLOB_BUFFER)
            view = memoryview(buffer)
            f.seek(pos)
            while pos < end:
                n = f.readinto(view[: min(len(buffer), end - pos)])
                if not n:
                    raise _ShortSource(f"{self.path} ends before byte {end}")
                sock.sendall(view[:n])
                pos += n
                if report is not None:
                    report(n)

    def chunks(self) -> Iterator[bytes]:
        """The same bytes for httpx (the proxy path), in 1 MiB pieces."""
        report = self.on_progress
        pos, end = self.offset, self.offset + self.size
        with open(self.path, "rb") as f:
            f.seek(pos)
            while pos < end:
                data = f.read(min(BLOB_BUFFER, end - pos))
                if not data:
                    raise _ShortSource(f"{self.path} ends before byte {end}")
                pos += len(data)
                if report is not None:
                    report(len(data))
                yield data


class _ShortSource(Exception):
    """The file to upload is shorter than the blob: a local fault, never worth a retry."""


class _Authenticator:
    """Decides the Authorization header per repository, shared by every thread of a client.

    After the first Bearer challenge the realm is remembered, so the next repository gets its
    token before its first request instead of after a 401 round trip.
    """

    def __init__(self, client: RegistryClient, credentials: Credentials | None) -> None:
        self._client = client
        self._credentials = credentials
        self._tokens = TokenCache()
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._scheme: str | None = None
        self._realm: tuple[str, str] | None = None

    @staticmethod
    def scope(name: str | None, push: bool = False, mount_from: str | None = None) -> str:
        """The token scope an operation needs; several scopes are space-separated.

        Pushes ask for `pull,push` only when they push, so a read-only credential keeps
        working for copies out of a registry; a mount also needs to read its source.
        """
        if not name:
            return ""
        if name == CATALOG:
            return "registry:catalog:*"
        scope = f"repository:{name}:pull,push" if push else f"repository:{name}:pull"
        if mount_from and mount_from != name:
            scope += f" repository:{mount_from}:pull"
        return scope

    def header(self, scope: str) -> str | None:
        with self._lock:
            scheme, realm = self._scheme, self._realm
        if scheme == "basic" and self._credentials is not None:
            return basic_header(self._credentials)
        if scheme == "bearer" and realm is not None:
            return f"Bearer {self._token(realm, scope, refused=None)}"
        return None

    def _token(self, realm: tuple[str, str], scope: str, refused: str | None) -> str:
        url, service = realm
        if refused is not None:
            self._tokens.invalidate(url, service, scope, refused)
        token = self._tokens.get(url, service, scope)
        if token is not None:
            return token
        # One fetch per scope even when eight threads start on the same repository at once.
        with self._fetch_lock:
            token = self._tokens.get(url, service, scope)
            if token is None:
                token, expires_in = self._client._fetch_token(
                    url, service, scope, self._credentials
                )
                self._tokens.put(url, service, scope, token, expires_in)
        return token

    def on_unauthorized(self, www_authenticate: str | None, scope: str, sent: str | None) -> None:
        host = self._client.host
        challenges = parse_challenges(www_authenticate or "")
        by_scheme = {c.scheme: c for c in challenges}
        if "bearer" in by_scheme:
            params = by_scheme["bearer"].params
            realm_url = params.get("realm")
            if not realm_url:
                raise AuthError(f"authentication to {host} failed: Bearer challenge without realm")
            validate_realm(realm_url, host, self._client.base_url.startswith("https:"))
            realm = (realm_url, params.get("service", ""))
            with self._lock:
                self._scheme, self._realm = "bearer", realm
            refused = sent[len("Bearer ") :] if sent and sent.startswith("Bearer ") else None
            self._token(realm, scope, refused)
            return
        if "basic" in by_scheme:
            creds = self._credentials
            if creds is None or not creds.has_basic:
                raise AuthError(
                    f"authentication to {host} failed: the registry requires credentials"
                )
            if sent is not None and sent.startswith("Basic "):
                raise AuthError(f"authentication to {host} failed: credentials refused")
            with self._lock:
                self._scheme = "basic"
            return
        raise AuthError(f"authentication to {host} failed: no supported challenge in 401 answer")


CATALOG = "\0catalog"  # the scope name of /v2/_catalog requests


def _next_link(header: str | None, current: str) -> str:
    """The `rel="next"` target of a Link header, resolved against `current`; "" if none.
    Only links on the same origin are followed."""
    if not header:
        return ""
    for part in header.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            target = part.split(";", 1)[0].strip().strip("<>")
            url = urllib.parse.urljoin(current, target)
            return url if _origin(url) == _origin(current) else ""
    return ""


class RegistryClient:
    """A thread-safe client for one registry host; share one instance between fetch threads."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        tls_verify: bool = True,
        ca_file: str | None = None,
        credentials: Credentials | None = None,
        retries: int = 3,
        timeout: float = 60.0,
        pool_size: int = 8,
    ) -> None:
        self.host = host
        self.base_url = f"{'http' if insecure else 'https'}://{host}"
        self._origin = _origin(self.base_url)
        self._retries = max(retries, 0)
        self._backoff_scale = _backoff_scale()
        self._ssl_context = _ssl_context(tls_verify, ca_file)
        self._http = httpx.Client(
            headers=IDENTITY,  # answers read into memory are never decoded (see bodies)
            verify=self._ssl_context,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            follow_redirects=False,
            http2=False,
        )
        self._raw = _RawPool(self._ssl_context, timeout)
        self._auth = _Authenticator(self, credentials)

    # -- public API ------------------------------------------------------------------------

    def get_manifest(self, name: str, reference: str, accept: Sequence[str]) -> ManifestResponse:
        """GET a manifest, byte-exact, and check it against every digest that names it."""
        url = self._manifest_url(name, reference)
        response, body = self._get_small(
            url, name, {"Accept": ", ".join(accept)}, MAX_MANIFEST_SIZE,
            f"manifest {name}:{reference} not found on {self.host}")
        if len(body) > MAX_MANIFEST_SIZE:
            raise ManifestError(
                f"manifest {name}:{reference} on {self.host} is larger than "
                f"{MAX_MANIFEST_SIZE // 2**20} MiB"
            )
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if DIGEST_RE.match(reference) and digest != reference:
            raise DigestError(f"manifest {name}@{reference} from {self.host}: got {digest}")
        served = response.headers.get("docker-content-digest")
        if served and served.startswith("sha256:") and served != digest:
            raise DigestError(
                f"manifest {name}:{reference} from {self.host}: body hashes to {digest}, "
                f"registry says {served}"
            )
        return ManifestResponse(
            body=body,
            media_type=_media_type(response.headers.get("content-type")),
            digest=digest,
            size=len(body),
        )

    def head_manifest(
        self, name: str, reference: str, accept: Sequence[str]
    ) -> ManifestResponse | None:
        """HEAD a manifest: cheap existence and digest check (not counted by Docker Hub)."""
        url = self._manifest_url(name, reference)
        response = self._request("HEAD", url, name=name, headers={"Accept": ", ".join(accept)})
        response.close()
        if response.status == 404:
            return None
        self._check_status(
            response, "HEAD", url, f"manifest {name}:{reference} not found on {self.host}"
        )
        digest = response.headers.get("docker-content-digest") or ""
        if digest and not DIGEST_RE.match(digest):
            raise RegistryError(
                f"HEAD {_redact(url)}: registry sent a malformed Docker-Content-Digest"
            )
        try:
            size = int(response.headers.get("content-length") or 0)
        except ValueError:
            size = 0
        return ManifestResponse(
            body=b"",
            media_type=_media_type(response.headers.get("content-type")),
            digest=digest,
            size=size,
        )

    def get_blob(self, name: str, digest: str, max_size: int = 16 * 2**20) -> bytes:
        """Fetch a small blob (an image config) into memory, verified against its digest."""
        url = self._blob_url(name, digest)
        _, body = self._get_small(url, name, {"Accept-Encoding": "identity"}, max_size,
                                  f"blob {digest} not found in {self.host}/{name}")
        if len(body) > max_size:
            raise DigestError(
                f"blob {digest} from {self.host}/{name}: larger than {max_size} bytes"
            )
        got = "sha256:" + hashlib.sha256(body).hexdigest()
        if got != digest:
            raise DigestError(f"blob {digest} from {self.host}/{name}: got {got}")
        return body

    def download_blob(
        self,
        name: str,
        digest: str,
        size: int | None,
        dest: str,
        on_progress: Callable[[int], None] | None = None,
        offset: int | None = None,
    ) -> int:
        """Stream a blob to `dest`, hashing inline; resume a broken stream with Range.

        With `offset`, `dest` is an existing file (a tarball being assembled) and the blob
        goes into the region that starts there: nothing outside it is written or truncated,
        so `size` must be given.

        Returns the number of bytes written. `on_progress(n)` is called after each chunk; when
        the server ignores Range and the download restarts from zero, it is called once with
        the negative count already reported, so a progress total stays honest.
        On a size or digest mismatch the file is truncated to zero before DigestError.
        """
        url = self._blob_url(name, digest)
        where = f"{self.host}/{name}"
        not_found = f"blob {digest} not found in {where}"
        budget = _Budget(self._retries)
        buffer = bytearray(BLOB_BUFFER)
        hasher = hashlib.sha256()
        written = 0
        if offset is not None and size is None:
            raise ValueError("writing at an offset needs the blob's size")
        base = offset or 0
        try:
            if offset is None:
                out = open(dest, "wb")
            else:
                out = os.fdopen(os.open(dest, os.O_WRONLY), "wb")
                out.seek(base)
        except OSError as exc:
            raise DestinationError(f"cannot write {dest}: {exc.strerror}") from None
        try:
            while True:
                headers = {"Accept-Encoding": "identity"}
                if written:
                    headers["Range"] = f"bytes={written}-"
                response = self._request(
                    "GET", url, name=name, headers=headers, budget=budget, raw=True
                )
                try:
                    self._check_status(response, "GET", url, not_found, ok=(200, 206))
                    start = _resume_offset(response)
                    if start != written:
                        # The server ignored Range (200) or resumed elsewhere: start over.
                        log.debug("blob %s: no resume at byte %d; restarting", digest, written)
                        out.seek(base)
                        if offset is None:
                            out.truncate()
                        hasher = hashlib.sha256()
                        if on_progress is not None and written:
                            on_progress(-written)
                        written = 0
                        if start != 0:
                            if budget.exhausted():
                                raise RegistryError(
                                    f"GET {_redact(url)}: the registry answers Range requests "
                                    "with the wrong part of the blob"
                                )
                            budget.used += 1
                            continue
                    announced = _announced_end(response, written)
                    if size is not None and announced is not None and announced > size:
                        # Extra bytes are this blob's fault, not the network's: no Range
                        # retry, and nothing past `size` is read or waited for.
                        response.abort()
                        raise DigestError(f"blob {digest} from {where}: the registry announces "
                                          f"{announced} bytes, the manifest says {size}")
                    update, write = hasher.update, out.write
                    # Never past `size`: at an offset, the next region is another blob's.
                    limit = size - written if size is not None else sys.maxsize
                    for chunk in response.chunks(buffer, limit):
                        n = len(chunk)
                        update(chunk)
                        write(chunk)
                        written += n
                        COUNTERS.add("bytes_received", n)
                        if on_progress is not None:
                            on_progress(n)
                    break
                except _TransportFailure as exc:
                    if budget.exhausted():
                        raise TransientError(
                            f"GET {_redact(url)}: {exc} after {budget.attempts} attempts"
                        ) from None
                    log.debug("blob %s: %s at byte %d; resuming", digest, exc, written)
                    self._sleep(budget.used, None, f"GET {_redact(url)}: {exc}")
                    budget.used += 1
                finally:
                    response.close()
            out.flush()
            if size is not None and written != size:
                raise DigestError(
                    f"blob {digest} from {where}: got {written} bytes, expected {size}"
                )
            got = "sha256:" + hasher.hexdigest()
            if got != digest:
                raise DigestError(f"blob {digest} from {where}: got {got}")
            return written
        except OSError as exc:
            if offset is None:
                _truncate_quietly(out)
            raise DestinationError(f"cannot write {dest}: {exc.strerror}") from None
        except BaseException:
            if offset is None:
                _truncate_quietly(out)
            raise
        finally:
            out.close()

    # -- pushing ---------------------------------------------------------------------------

    def get_api(self, url: str, headers: Mapping[str, str], cap: int) -> tuple[int, bytes]:
        """GET a document from another HTTP API on this host (Quay's REST API): (status, up
        to `cap` + 1 bytes of body). The same TLS settings, rate limit, retries (429 and
        5xx, Retry-After) and counters as registry requests, but none of the registry's
        credentials: `headers` carries the API's own, and never leaves this origin."""
        response, body = self._get_small(url, None, headers, cap, None, auth=False)
        return response.status, body

    def _get_small(self, url: str, name: str | None, headers: Mapping[str, str], cap: int,
                   not_found: str | None, auth: bool = True) -> tuple[_Response, bytes]:
        """GET a small body (up to `cap` + 1 bytes), retrying a body that breaks off as the
        whole request: one shared budget for both. `not_found=None`: any status is the
        caller's to read."""
        budget = _Budget(self._retries)
        while True:
            response = self._request("GET", url, name=name, headers=headers, budget=budget,
                                     auth=auth)
            try:
                if not_found is not None:
                    self._check_status(response, "GET", url, not_found)
                return response, response.read(cap)
            except _TransportFailure as exc:
                if budget.exhausted():
                    raise TransientError(f"GET {_redact(url)}: {exc} after "
                                         f"{budget.attempts} attempts") from exc
                self._sleep(budget.used, None, f"GET {_redact(url)}: {exc}")
                budget.used += 1
            finally:
                response.close()

    def list_repositories(self, page_size: int = 1000, limit: int = 100_000) -> list[str]:
        """Every repository in `/v2/_catalog`, following `Link: <…>; rel="next"` pages."""
        return self._paged(f"{self.base_url}/v2/_catalog?n={page_size}", CATALOG,
                           "repositories", limit)

    def list_tags(self, name: str, limit: int = 100_000) -> list[str]:
        """Every tag of `name` in `/v2/<name>/tags/list`, following Link pages."""
        _check_name(name)
        return self._paged(f"{self.base_url}/v2/{name}/tags/list?n=1000", name, "tags", limit)

    def _paged(self, url: str, scope_name: str, key: str, limit: int) -> list[str]:
        found: list[str] = []
        what = (f"the catalog of {self.host}" if scope_name == CATALOG
                else f"the tags of {self.host}/{scope_name}")
        guard = PageGuard(what, url)
        while url and len(found) < limit:
            response = self._request("GET", url, name=scope_name)
            try:
                self._check_status(response, "GET", url, f"{key} not found on {self.host}")
                body = response.read(MAX_ERROR_BODY * 64)
            except _TransportFailure as exc:
                raise TransientError(f"GET {_redact(url)}: {exc}") from exc
            finally:
                response.close()
            try:
                items = json.loads(body).get(key) or []
            except (ValueError, AttributeError):
                items = None
            if not isinstance(items, list):
                raise RegistryError(f"GET {_redact(url)}: not a JSON {key} list") from None
            found.extend(str(i) for i in items)
            url = _next_link(response.headers.get("link"), url)
            if url:
                guard.next_page(url, len(items))
        return found

    def blob_exists(self, name: str, digest: str) -> int | None:
        """HEAD a blob: its size when the repository has it, None when it does not.

        The cheapest way to skip an upload; a size of 0 means the registry did not say.
        """
        url = self._blob_url(name, digest)
        response = self._request("HEAD", url, name=name, raw=True)
        response.close()
        if response.status == 404:
            return None
        self._check_status(response, "HEAD", url, f"blob {digest} not found in {self.host}/{name}")
        try:
            return int(response.headers.get("content-length") or 0)
        except ValueError:
            return 0

    def mount_blob(self, name: str, digest: str, from_name: str) -> bool:
        """Ask the registry to link a blob from another repository instead of uploading it.

        True when mounted (201). A 202 means the registry declined (the source lacks the blob,
        or we may not read it) and opened an upload session instead; that session is deleted
        at once so it does not linger, and the caller falls back to an upload.
        """
        self._blob_url(name, digest)
        _check_name(from_name)
        query = urllib.parse.urlencode({"mount": digest, "from": from_name})
        url = f"{self.base_url}/v2/{name}/blobs/uploads/?{query}"
        what = f"blob {digest} to {self.host}/{name}"
        response = self._request(
            "POST", url, name=name, push=True, mount_from=from_name, raw=True
        )
        try:
            if response.status == 201:
                COUNTERS.add("mounts")
                return True
            if response.status == 202:
                location = response.headers.get("location")
                if location:
                    try:
                        session = self._upload_location(url, location, what)
                    except RegistryError:
                        return False  # never send anything to a foreign host, not even DELETE
                    response.close()
                    self._cancel_upload(name, _Session(session, 0))
                return False
            self._raise_upload_error(response, "POST", url, what)
        finally:
            response.close()

    def upload_blob(
        self,
        name: str,
        digest: str,
        size: int,
        src: str,
        offset: int = 0,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload bytes [offset, offset+size) of `src` as blob `digest`, streaming from disk.

        The digest is not recomputed: the caller verified these bytes when it fetched them, and
        the registry checks them again on the final PUT (a refusal becomes DigestError).

        Small blobs take one POST and one monolithic PUT. Big blobs, and a small one whose PUT
        broke mid-body, go up in chunks; after a failure the registry is asked how much it
        holds (GET on the session) and the upload continues from there rather than from zero.
        Every failure spends the one `--retries` budget of this blob. An abandoned session is
        deleted (best effort) so registries with quotas do not count it.

        `on_progress(n)` gets the bytes sent; after a resume from an earlier point it gets the
        negative difference, so a progress total stays honest.
        """
        url = self._blob_url(name, digest)
        what = f"blob {digest} to {self.host}/{name}"
        if size < 0 or offset < 0:
            raise ValueError("size and offset must not be negative")
        try:
            available = os.stat(src).st_size
        except OSError as exc:
            raise DestinationError(f"cannot read {src}: {exc.strerror}") from None
        if available < offset + size:
            raise DigestError(
                f"{what}: {src} holds {available} bytes, fewer than the blob's end at byte "
                f"{offset + size}"
            )
        progress = _Progress(on_progress)
        budget = _Budget(self._retries)
        session = self._open_upload(name, url, budget, what)
        try:
            done = 0
            if size <= CHUNKED_THRESHOLD:
                failure = self._put_whole(name, session, digest, size, src, offset, budget,
                                          progress, what)
                if failure is None:
                    return
                session, done = self._recover(name, url, session, budget, what, *failure)
                progress.rewind(done)
            while True:
                while done < size:
                    chunk = min(max(session.min_chunk, CHUNK_SIZE), size - done)
                    region = _Region(src, offset + done, chunk, progress.add)
                    outcome = self._patch(name, session, done, region, budget, what)
                    if isinstance(outcome, _Session):
                        session, done = outcome, done + chunk
                        continue
                    session, done = self._recover(name, url, session, budget, what, *outcome)
                    progress.rewind(done)
                failure = self._finish_upload(name, session, digest, budget, what)
                if failure is None:
                    return
                session, done = self._recover(name, url, session, budget, what, *failure)
                progress.rewind(done)
        except _ShortSource as exc:  # the file shrank under us after the size check
            self._cancel_upload(name, session)
            raise DigestError(f"{what}: {exc}") from None
        except Exception:
            self._cancel_upload(name, session)
            raise

    def get_referrers(self, name: str, digest: str, max_pages: int = 100
                      ) -> list[bytes] | None:
        """`GET /v2/<name>/referrers/<digest>` (distribution-spec 1.1, "Listing Referrers"),
        following `Link: <…>; rel="next"` pages: the index bodies, or None when the registry
        has no referrers API (404 or 405 on the first page; a registry that has it never
        answers 404). RegistryError for a page seen twice or more than `max_pages`."""
        self._blob_url(name, digest)  # validates both
        url = f"{self.base_url}/v2/{name}/referrers/{digest}"
        pages: list[bytes] = []
        seen: set[str] = set()
        while url:
            if url in seen or len(pages) >= max_pages:
                raise RegistryError(f"referrers of {name}@{digest} on {self.host}: the pages "
                                    f"loop or run past {max_pages}")
            seen.add(url)
            response = self._request("GET", url, name=name,
                                     headers={"Accept": "application/vnd.oci.image.index.v1+json"})
            try:
                if response.status in (404, 405) and not pages:
                    return None
                self._check_status(response, "GET", url, f"referrers of {name}@{digest}")
                body = response.read(MAX_MANIFEST_SIZE)
            except _TransportFailure as exc:
                raise TransientError(f"GET {_redact(url)}: {exc}") from exc
            finally:
                response.close()
            if len(body) > MAX_MANIFEST_SIZE:
                raise ManifestError(f"referrers of {name}@{digest} on {self.host}: a page "
                                    f"larger than {MAX_MANIFEST_SIZE // 2**20} MiB")
            pages.append(body)
            url = _next_link(response.headers.get("link"), url)
        return pages

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest byte-exact under a tag or digest; return its digest.

        The digest is ours (sha256 of the exact bytes); a registry that reports another one
        has rewritten the manifest, which would break every pinned reference, so it is an error.
        """
        return self.put_manifest_acked(name, reference, body, media_type)[0]

    def put_manifest_acked(self, name: str, reference: str, body: bytes, media_type: str
                           ) -> tuple[str, bool]:
        """`put_manifest`, also saying whether the registry answered with an `OCI-Subject`
        header (it maintains the referrers of the manifest's subject itself; otherwise the
        client keeps the referrers tag, distribution-spec 1.1 "Pushing Manifests with
        Subject")."""
        url = self._manifest_url(name, reference)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        what = f"manifest {name}:{reference} to {self.host}"
        if DIGEST_RE.match(reference) and reference != digest:
            raise DigestError(f"{what}: the manifest hashes to {digest}")
        response = self._request(
            "PUT",
            url,
            name=name,
            push=True,
            headers={"Content-Type": media_type},
            body=body,
            raw=True,
        )
        try:
            if response.status not in (200, 201):
                self._raise_upload_error(response, "PUT", url, what)
            served = response.headers.get("docker-content-digest")
            subject = bool(response.headers.get("oci-subject"))
        finally:
            response.close()
        if served and served != digest:
            raise DigestError(f"{what}: the registry stored it as {served}, expected {digest}")
        return digest, subject

    # -- upload steps: each returns a failure (message, retry_after) or raises ---------------

    def _open_upload(self, name: str, url: str, budget: _Budget, what: str) -> _Session:
        """POST a new upload session (retried inside `_request`: it carries no body)."""
        start = f"{self.base_url}/v2/{name}/blobs/uploads/"
        response = self._request("POST", start, name=name, push=True, budget=budget, raw=True)
        try:
            if response.status != 202:
                self._raise_upload_error(response, "POST", start, what)
            location = response.headers.get("location")
            if not location:
                raise RegistryError(f"{what}: POST {_redact(start)} answered 202 without Location")
            try:
                min_chunk = int(response.headers.get("oci-chunk-min-length") or 0)
            except ValueError:
                min_chunk = 0
        finally:
            response.close()
        return _Session(self._upload_location(start, location, what), max(min_chunk, 0))

    def _put_whole(
        self,
        name: str,
        session: _Session,
        digest: str,
        size: int,
        src: str,
        offset: int,
        budget: _Budget,
        progress: _Progress,
        what: str,
    ) -> tuple[str, float | None] | None:
        target = _with_digest(session.location, digest)
        headers = {"Content-Type": UPLOAD_CONTENT_TYPE, "Content-Length": str(size)}
        region = _Region(src, offset, size, progress.add)
        try:
            response = self._request(
                "PUT", target, name=name, push=True, headers=headers, budget=budget, raw=True,
                body=region, retry=False,
            )
        except _TransportFailure as exc:
            return f"PUT {_redact(target)}: {exc}", None
        try:
            return self._completed(response, "PUT", target, digest, what)
        finally:
            response.close()

    def _patch(
        self,
        name: str,
        session: _Session,
        start: int,
        region: _Region,
        budget: _Budget,
        what: str,
    ) -> _Session | tuple[str, float | None]:
        """Send one chunk; the next session state on success, a failure to recover from."""
        end = start + region.size - 1
        headers = {
            "Content-Type": UPLOAD_CONTENT_TYPE,
            "Content-Length": str(region.size),
            "Content-Range": f"{start}-{end}",
        }
        url = session.location
        try:
            response = self._request(
                "PATCH", url, name=name, push=True, headers=headers, budget=budget, raw=True,
                body=region, retry=False,
            )
        except _TransportFailure as exc:
            return f"PATCH {_redact(url)}: {exc}", None
        try:
            if response.status == 202:
                accepted = _range_end(response.headers.get("range"))
                if accepted is not None and accepted != end:
                    # The registry kept a different amount: ask it and resume from there.
                    return f"PATCH {_redact(url)}: registry holds up to byte {accepted}", 0.0
                location = response.headers.get("location")
                if location:
                    return _Session(self._upload_location(url, location, what), session.min_chunk)
                return session
            if response.status in RETRYABLE_STATUS or response.status in (404, 416):
                # 404/416: the session is gone or out of step; recovery starts a new one.
                return _status_failure("PATCH", url, response)
            self._raise_upload_error(response, "PATCH", url, what)
        finally:
            response.close()

    def _finish_upload(
        self, name: str, session: _Session, digest: str, budget: _Budget, what: str
    ) -> tuple[str, float | None] | None:
        target = _with_digest(session.location, digest)
        headers = {"Content-Type": UPLOAD_CONTENT_TYPE, "Content-Length": "0"}
        try:
            response = self._request(
                "PUT", target, name=name, push=True, headers=headers, budget=budget, raw=True,
                retry=False,
            )
        except _TransportFailure as exc:
            failure: tuple[str, float | None] = (f"PUT {_redact(target)}: {exc}", None)
        else:
            try:
                outcome = self._completed(response, "PUT", target, digest, what)
            finally:
                response.close()
            if outcome is None:
                return None
            failure = outcome
        # The PUT may have landed with its answer lost: then the blob is simply there.
        if self.blob_exists(name, digest) is not None:
            return None
        return failure

    def _completed(
        self, response: _Response, method: str, url: str, digest: str, what: str
    ) -> tuple[str, float | None] | None:
        """Judge the answer to a committing PUT: None when the blob is in, else a failure."""
        if response.status == 201:
            served = response.headers.get("docker-content-digest")
            if served and served != digest:
                raise DigestError(f"{what}: the registry stored it as {served}")
            return None
        if response.status in RETRYABLE_STATUS or response.status in (404, 416):
            return _status_failure(method, url, response)
        self._raise_upload_error(response, method, url, what)

    def _recover(
        self,
        name: str,
        url: str,
        session: _Session,
        budget: _Budget,
        what: str,
        failure: str,
        retry_after: float | None,
    ) -> tuple[_Session, int]:
        """After a failed upload step: wait, then ask where the session stands.

        Returns the session to continue and the offset to continue from; a session the
        registry no longer knows (or has cancelled because its offset went wrong, as
        distribution does after a broken PATCH) is replaced by a new one from offset 0.
        """
        if budget.exhausted():
            raise TransientError(f"{what}: {failure} after {budget.attempts} attempts",
                                 retry_after=retry_after)
        log.debug("%s: %s; resuming", what, failure)
        self._sleep(budget.used, retry_after, failure)
        budget.used += 1
        response = self._request(
            "GET", session.location, name=name, push=True, budget=budget, raw=True
        )
        try:
            if response.status == 204:
                end = _range_end(response.headers.get("range"))
                location = response.headers.get("location")
                if location:
                    session = _Session(
                        self._upload_location(session.location, location, what),
                        session.min_chunk,
                    )
                return session, (end + 1 if end is not None else 0)
        finally:
            response.close()
        log.debug("%s: upload session lost (%d); starting a new one", what, response.status)
        self._cancel_upload(name, session)
        return self._open_upload(name, url, budget, what), 0

    def _cancel_upload(self, name: str, session: _Session) -> None:
        """DELETE an abandoned session, once, ignoring every failure: it is only tidying."""
        try:
            response = self._request(
                "DELETE", session.location, name=name, push=True, budget=_Budget(0), raw=True
            )
            response.close()
        except (OccystrapError, _TransportFailure) as exc:
            log.debug("cancelling upload %s: %s", _redact(session.location), exc)

    def _upload_location(self, request_url: str, location: str, what: str) -> str:
        """Resolve an upload Location and refuse one that leaves the registry.

        The spec lets Location be relative or absolute but says nothing of other hosts; a
        registry that sends blob bodies (and would get our credentials) elsewhere is either
        misconfigured or hostile, so only the registry's own scheme, host and port pass.
        """
        resolved = urllib.parse.urljoin(request_url, location.strip())
        resolved = urllib.parse.urldefrag(resolved)[0]
        if _origin(resolved) != self._origin:
            raise RegistryError(
                f"{what}: the registry sent an upload location on another server "
                f"({_redact(resolved)}); refusing to send the blob there"
            )
        return resolved

    def _raise_upload_error(
        self, response: _Response, method: str, url: str, what: str
    ) -> NoReturn:
        """Turn a final refusal into the error that says what and why, using the JSON body."""
        body = b""
        if method != "HEAD":
            body = _error_body(response)
        response.close()
        detail = _error_detail(body)
        status = f"{response.status} {response.reason}"
        if _error_code(body) == "DIGEST_INVALID":
            raise DigestError(f"{what}: the registry refused the digest: {status}{detail}")
        if response.status in (401, 403):
            raise AuthError(
                f"authentication to {self.host} failed: {what}: {method} {_redact(url)}: "
                f"{status}{detail}"
            )
        raise RegistryError(f"{what}: {method} {_redact(url)} answered {status}{detail}")

    def close(self) -> None:
        self._http.close()
        self._raw.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the one request path --------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        name: str | None,
        headers: Mapping[str, str] | None = None,
        budget: _Budget | None = None,
        raw: bool = False,
        push: bool = False,
        mount_from: str | None = None,
        body: bytes | _Region | None = None,
        retry: bool = True,
        auth: bool = True,
    ) -> _Response:
        """Send a request with auth, retries and redirects; return the first final answer.

        The caller must close the response. Statuses other than 401, redirects and retryable
        ones are returned as-is for the caller to interpret (404 means different things).
        Only GET and HEAD follow redirects: re-sending an upload body elsewhere is a decision
        the spec leaves to us, and we decline it.

        With `retry=False` (an upload that carries part of a blob) a transport failure raises
        `_TransportFailure` and a retryable status is returned: a half-sent chunk may have
        moved the registry's offset, and only the caller can ask where the upload stands.
        With `auth=False` (another API on the host) no registry credential is sent and a 401
        is the caller's to read.
        """
        budget = budget or _Budget(self._retries)
        scope = self._auth.scope(name, push, mount_from)
        limiter = ratelimit.current()
        auth_rounds = 0
        redirects = 0
        current = url
        while True:
            on_registry = _origin(current) == self._origin
            send_headers = dict(headers or {})
            if not on_registry:  # a caller's own credential stays on this origin too
                send_headers.pop("Authorization", None)
            sent_auth = self._auth.header(scope) if on_registry and auth else None
            if sent_auth is not None:
                send_headers["Authorization"] = sent_auth
            if limiter is not None:
                limiter.acquire(self.host)
            try:
                response = self._send(method, current, send_headers, raw, body)
            except _TransportFailure as exc:
                if not exc.retryable:
                    raise RegistryError(f"cannot reach registry {self.host}: {exc}") from None
                if not retry:
                    raise
                if budget.exhausted():
                    raise TransientError(
                        f"cannot reach registry {self.host}: {exc} "
                        f"({method} {_redact(current)}, {budget.attempts} attempts)"
                    ) from None
                log.debug("%s %s: %s; retrying", method, _redact(current), exc)
                self._sleep(budget.used, None, f"{method} {_redact(current)}: {exc}")
                budget.used += 1
                continue

            pause = ratelimit.pause_for(response.headers.get("ratelimit-limit"),
                                        response.headers.get("ratelimit-remaining"))
            if pause:
                self._wait(pause, "the registry says its rate limit is nearly spent "
                                  "(RateLimit-Remaining)")
            status = response.status
            if status == 401 and on_registry and auth:
                challenge = response.headers.get("www-authenticate")
                response.close()
                if auth_rounds >= 2:
                    raise AuthError(
                        f"authentication to {self.host} failed: {method} {_redact(current)} "
                        "answered 401 Unauthorized with fresh credentials"
                    )
                auth_rounds += 1
                self._auth.on_unauthorized(challenge, scope, sent_auth)
                continue
            if status in _REDIRECTS and method in ("GET", "HEAD"):
                location = response.headers.get("location")
                response.close()
                redirects += 1
                if not location or redirects > MAX_REDIRECTS:
                    raise RegistryError(f"{method} {_redact(url)}: too many or broken redirects")
                current = urllib.parse.urljoin(current, location)
                if urllib.parse.urlsplit(current).scheme not in ("http", "https"):
                    raise RegistryError(f"{method} {_redact(url)}: redirect to a non-HTTP URL")
                continue
            if status in RETRYABLE_STATUS and retry:
                retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
                response.close()
                if budget.exhausted():
                    raise TransientError(
                        f"{method} {_redact(current)}: {status} {response.reason} "
                        f"after {budget.attempts} attempts",
                        retry_after=retry_after,
                    )
                log.debug("%s %s: %d; retrying", method, _redact(current), status)
                self._sleep(budget.used, retry_after,
                            f"{method} {_redact(current)}: {status} {response.reason}")
                budget.used += 1
                continue
            return response

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        raw: bool,
        body: bytes | _Region | None = None,
    ) -> _Response:
        COUNTERS.request(url)
        response = self._send_once(method, url, headers, raw, body)
        if response.status == 429:
            COUNTERS.add("throttled")
        return response

    def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        raw: bool,
        body: bytes | _Region | None = None,
    ) -> _Response:
        if raw and not _proxied(url):
            return self._raw.send(method, url, headers, body)
        content: bytes | Iterator[bytes] | None = (
            body.chunks() if isinstance(body, _Region) else body
        )
        try:
            request = self._http.build_request(method, url, headers=headers, content=content)
            response = self._http.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:
            retryable = not (_is_tls_failure(exc) or isinstance(exc, httpx.LocalProtocolError))
            raise _TransportFailure(_describe(exc), retryable=retryable) from None
        return _HttpxResponse(response, url)

    def _fetch_token(
        self, realm: str, service: str, scope: str, credentials: Credentials | None
    ) -> tuple[str, float | None]:
        budget = _Budget(self._retries)
        while True:
            try:
                return fetch_token(self._http, self.host, realm, service, scope, credentials,
                                   self.base_url.startswith("https:"))
            except TransientError as exc:
                if budget.exhausted():
                    raise TransientError(
                        f"{exc} after {budget.attempts} attempts", exc.retry_after
                    ) from None
                self._sleep(budget.used, exc.retry_after, str(exc))
                budget.used += 1

    def _sleep(self, attempt: int, retry_after: float | None, why: str) -> None:
        COUNTERS.add("retries")  # every retry, of any kind, waits here first
        self._wait(backoff_delay(attempt, retry_after) * self._backoff_scale,
                   f"retry {attempt + 1} after {why}")

    def _wait(self, seconds: float, why: str) -> None:
        """Every wait of this client: a long one is counted and said (never silent)."""
        if seconds > ratelimit.NOTICE_AFTER:
            COUNTERS.add("pauses")
            COUNTERS.add("paused_seconds", seconds)
            ratelimit.announce(self.host, seconds, why)
        time.sleep(seconds)

    def _check_status(
        self,
        response: _Response,
        method: str,
        url: str,
        not_found: str,
        ok: tuple[int, ...] = (200,),
    ) -> None:
        if response.status in ok:
            return
        if response.status == 404:
            response.close()
            raise NotFoundError(not_found)
        detail = ""
        if method != "HEAD":
            detail = _error_detail(_error_body(response))
        response.close()
        if response.status in (401, 403):
            raise AuthError(
                f"authentication to {self.host} failed: {method} {_redact(url)}: "
                f"{response.status} {response.reason}{detail}"
            )
        raise RegistryError(
            f"{method} {_redact(url)}: unexpected {response.status} {response.reason}{detail}"
        )

    def _manifest_url(self, name: str, reference: str) -> str:
        _check_name(name)
        if not (DIGEST_RE.match(reference) or TAG_RE.match(reference)):
            raise UsageError(f"invalid manifest reference {reference!r}")
        return f"{self.base_url}/v2/{name}/manifests/{reference}"

    def _blob_url(self, name: str, digest: str) -> str:
        _check_name(name)
        if not DIGEST_RE.match(digest):
            raise DigestError(f"invalid blob digest {digest!r}: expected sha256:<64 hex digits>")
        return f"{self.base_url}/v2/{name}/blobs/{digest}"


@dataclass(frozen=True)
class _Session:
    """An open upload: where to send the next request, and the registry's minimum chunk."""

    location: str
    min_chunk: int


class _Progress:
    """Bytes reported to the caller's callback, so a resume can take back what was resent."""

    def __init__(self, callback: Callable[[int], None] | None) -> None:
        self._callback = callback
        self.reported = 0

    def add(self, n: int) -> None:
        self.reported += n
        if n > 0:
            COUNTERS.add("bytes_sent", n)
        if self._callback is not None:
            self._callback(n)

    def rewind(self, to: int) -> None:
        delta = to - self.reported
        if delta:
            self.add(delta)


_RANGE_RE = re.compile(r"^(?:bytes=)?0-(\d+)$")


def _range_end(value: str | None) -> int | None:
    """The last byte index from an upload `Range: 0-N`, or None when absent or malformed.

    distribution answers `0-0` both for nothing and for one byte received; reading it as
    nothing costs at most a resent byte, never a corrupt blob (the registry checks offsets).
    """
    match = _RANGE_RE.match((value or "").strip())
    if not match:
        return None
    end = int(match.group(1))
    return None if end == 0 else end


def _with_digest(location: str, digest: str) -> str:
    """Add `digest=` to an upload URL, keeping the registry's own (opaque) query intact."""
    parts = urllib.parse.urlsplit(location)
    extra = urllib.parse.urlencode({"digest": digest})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _status_failure(method: str, url: str, response: _Response) -> tuple[str, float | None]:
    retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
    return f"{method} {_redact(url)}: {response.status} {response.reason}", retry_after


def _error_code(body: bytes) -> str:
    try:
        code = json.loads(body[:MAX_ERROR_BODY])["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    return code if isinstance(code, str) else ""


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise UsageError(f"invalid repository name {name!r}")


def _resume_offset(response: _Response) -> int | None:
    """Where the body starts: 0 for a 200, the Content-Range start for a 206, None if unusable."""
    if response.status == 200:
        return 0
    match = _CONTENT_RANGE_RE.match((response.headers.get("content-range") or "").strip())
    return int(match.group(1)) if match else None


def _announced_end(response: _Response, start: int) -> int | None:
    """Where the body says the blob ends: `start` + Content-Length, or the total of a 206's
    Content-Range when larger; None when neither is given or parses."""
    ends = []
    try:
        ends.append(start + int(response.headers.get("content-length") or ""))
    except ValueError:
        pass
    match = _CONTENT_RANGE_RE.match((response.headers.get("content-range") or "").strip())
    if match and match.group(3) != "*":
        ends.append(int(match.group(3)))
    return max(ends) if ends else None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip()


def _error_body(response: _Response) -> bytes:
    """An error answer's body for its detail, or nothing when it cannot be had (broken off,
    or encoded: an error page is not worth decoding without bound)."""
    try:
        return response.read(MAX_ERROR_BODY)
    except (_TransportFailure, RegistryError):
        return b""


def _error_detail(body: bytes) -> str:
    """The registry's own error code and message, short: distribution errors are JSON."""
    try:
        doc = json.loads(body[:MAX_ERROR_BODY])
        first = doc["errors"][0]
        text = f"{first.get('code', '')} {first.get('message', '')}".strip()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    text = " ".join(text.split())
    return f" ({text[:200]})" if text else ""


def _truncate_quietly(out: object) -> None:
    try:
        out.seek(0)  # type: ignore[attr-defined]
        out.truncate()  # type: ignore[attr-defined]
    except (OSError, ValueError):
        pass


def _proxied(url: str) -> bool:
    """True when the environment routes `url` through a proxy; only httpx honours proxies."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


@functools.lru_cache(maxsize=8)
def _ssl_context(tls_verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """One context for both HTTP libraries so verification settings cannot diverge. Made
    once per process and settings (loading the system's CA store costs ~20 ms, and every
    client of every stage wanted its own); `warm_ssl_context` makes it before the stages
    fork, so they inherit it. SSLContext is safe to share between threads."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA file {ca_file}: {exc}") from None
    if not tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def warm_ssl_context(tls_verify: bool, ca_file: str | None) -> None:
    _ssl_context(tls_verify, ca_file)


def _backoff_scale() -> float:
    """Tests shrink backoff with OCCYSTRAP_BACKOFF_SCALE; a bad value is ignored, not fatal."""
    try:
        scale = float(os.environ.get("OCCYSTRAP_BACKOFF_SCALE", "1.0"))
    except ValueError:
        return 1.0
    return scale if scale >= 0 else 1.0
