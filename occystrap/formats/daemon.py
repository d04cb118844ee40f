"""docker://: the Docker Engine API (or Podman's Docker-compatible one) over its unix socket.

Export streams `GET /images/{name}/get` into the tarball reader (one pass, blobs spooled);
import streams a tarball into `POST /images/load` as a chunked request body, member by
member (layer bytes go socket-ward with sendfile), so no file of the whole image is made.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any
from urllib.parse import quote

from occystrap.errors import DestinationError, NotFoundError, RegistryError, UsageError
from occystrap.reference import Location

API = "/v1.41"  # Docker 20.10; newer engines and Podman accept older API versions


def default_socket(env: dict[str, str] | None = None) -> str:
    """$DOCKER_HOST when it is a unix socket, else /var/run/docker.sock."""
    host = (env if env is not None else os.environ).get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return "/var/run/docker.sock"


def docker_socket(location: Location) -> str:
    """`?socket=PATH`, else the default."""
    return str(location.option("socket") or default_socket())


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise RegistryError(f"cannot reach the Docker engine at {self.socket_path}: "
                                f"{exc.strerror or exc}") from None
        self.sock = sock


class Engine:
    def __init__(self, socket_path: str, timeout: float = 600.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _connection(self) -> _UnixConnection:
        return _UnixConnection(self.socket_path, self.timeout)

    def _json(self, method: str, path: str) -> Any:
        conn = self._connection()
        try:
            conn.request(method, API + path)
            resp = conn.getresponse()
            body = resp.read(4 * 2**20)
        except OSError as exc:
            raise RegistryError(f"Docker engine at {self.socket_path}: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise _engine_error(resp.status, body, path)
        return json.loads(body) if body else None

    def version(self) -> str:
        return str(self._json("GET", "/version").get("Version", "0"))

    def export(self, name: str) -> tuple[http.client.HTTPResponse, _UnixConnection]:
        """The `docker save` stream of one image (caller reads, then closes both)."""
        conn = self._connection()
        try:
            conn.request("GET", f"{API}/images/{quote(name, safe='')}/get")
            resp = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise RegistryError(f"Docker engine at {self.socket_path}: {exc}") from None
        if resp.status >= 400:
            body = resp.read(65536)
            conn.close()
            if resp.status == 404:
                raise NotFoundError(f"image {name} not found in the Docker engine at "
                                    f"{self.socket_path}")
            raise _engine_error(resp.status, body, f"/images/{name}/get")
        return resp, conn

    def tag(self, image: str, repo: str, tag: str) -> None:
        self._json("POST", f"/images/{quote(image, safe='')}/tag?repo={quote(repo)}"
                           f"&tag={quote(tag)}")


def _engine_error(status: int, body: bytes, path: str) -> DestinationError:
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    return DestinationError(f"Docker engine: {path}: {status} {message}".strip())


class LoadStream:
    """A chunked `POST /images/load` body that a TarStream writes into.

    Connects on first use, in the write process (never across a fork). `finish()` sends the
    last chunk and reads the engine's JSON progress stream, turning an error into a clear
    message; `abort()` drops the connection so the engine discards a partial upload.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: _UnixConnection | None = None
        self.loaded: list[str] = []

    def _sock(self) -> socket.socket:
        if self._conn is None:
            conn = self.engine._connection()
            conn.putrequest("POST", f"{API}/images/load?quiet=1")
            conn.putheader("Content-Type", "application/x-tar")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            self._conn = conn
        assert self._conn.sock is not None
        return self._conn.sock

    def write(self, data: bytes | memoryview) -> int:
        if len(data):
            self._sock().sendall(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        return len(data)

    def copy_from(self, fd: int, size: int) -> None:
        """Send `size` bytes of the file `fd` as one chunk, with sendfile. Nothing for an
        empty member (a 0-byte layer.tar): a chunk of size 0 would end the request body."""
        if size == 0:
            return
        sock = self._sock()
        sock.sendall(b"%x\r\n" % size)
        # socket.sendfile, not os.sendfile: the socket has a timeout, so it is non-blocking
        # underneath and only the socket method waits for room in its buffer.
        with open(fd, "rb", closefd=False) as f:
            sent = sock.sendfile(f, 0, size)
        if sent != size:
            raise OSError("source file shrank while being sent")
        sock.sendall(b"\r\n")

    def finish(self) -> None:
        self._sock().sendall(b"0\r\n\r\n")
        assert self._conn is not None
        try:
            resp = self._conn.getresponse()
            body = resp.read(4 * 2**20)
        finally:
            self._conn.close()
        if resp.status >= 400:
            raise _engine_error(resp.status, body, "/images/load")
        for line in body.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("error") or event.get("errorDetail"):
                detail = event.get("error") or event["errorDetail"].get("message", "")
                raise DestinationError(f"Docker engine refused the image: {detail}")
            stream = str(event.get("stream", ""))
            if stream.startswith("Loaded image"):
                self.loaded.append(stream.split(":", 1)[1].strip())

    def abort(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def check_zstd_support(engine: Engine) -> None:
    major = engine.version().split(".", 1)[0]
    if major.isdigit() and int(major) < 23:
        raise UsageError(f"the Docker engine at {engine.socket_path} is version "
                         f"{engine.version()}: engines before 23 cannot load zstd layers; "
                         "add --compression gzip")
