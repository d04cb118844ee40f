"""The Docker Engine API (or Podman's Docker-compatible one) over its unix socket, shared by
the docker:// source and destination.

As a source, `Engine.export` streams `GET /images/{name}/get` into the tarball reader (one
pass, blobs spooled; `sources/tarball.py`); as a destination, `destinations/docker.py`
streams a tarball into `POST /images/load` as a chunked request body. This is the fourth
HTTP client beside the registry's transport: a unix socket and one request at a time need
none of its pooling, retries or authentication.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any
from urllib.parse import quote

from occystrap.errors import DestinationError, NotFoundError, RegistryError
from occystrap.reference import Location

API = "/v1.41"  # Docker 20.10; newer engines and Podman accept older API versions


def default_socket(env: dict[str, str] | None = None) -> str:
    """$DOCKER_HOST when it is a unix socket, else /var/run/docker.sock."""
    host = (env if env is not None else os.environ).get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return "/var/run/docker.sock"


def docker_socket(location: Location) -> str:
    """`?socket=PATH`, else the default."""
    return str(location.option("socket") or default_socket())


class UnixConnection(http.client.HTTPConnection):
    """http.client over a unix socket; RegistryError naming the socket when it cannot be
    reached."""

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
            raise RegistryError(
                f"cannot reach the Docker engine at {self.socket_path}: {exc.strerror or exc}"
            ) from None
        self.sock = sock


class Engine:
    """One engine, reached at `socket_path`; a new connection per request (`timeout` in
    seconds)."""

    def __init__(self, socket_path: str, timeout: float = 600.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def connection(self) -> UnixConnection:
        return UnixConnection(self.socket_path, self.timeout)

    def _json(self, method: str, path: str) -> Any:
        conn = self.connection()
        try:
            conn.request(method, API + path)
            resp = conn.getresponse()
            body = resp.read(4 * 2**20)
        except OSError as exc:
            raise RegistryError(f"Docker engine at {self.socket_path}: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise engine_error(resp.status, body, path)
        return json.loads(body) if body else None

    def version(self) -> str:
        return str(self._json("GET", "/version").get("Version", "0"))

    def export(self, name: str) -> tuple[http.client.HTTPResponse, UnixConnection]:
        """The `docker save` stream of one image (caller reads, then closes both)."""
        conn = self.connection()
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
                raise NotFoundError(
                    f"image {name} not found in the Docker engine at {self.socket_path}"
                )
            raise engine_error(resp.status, body, f"/images/{name}/get")
        return resp, conn

    def tag(self, image: str, repo: str, tag: str) -> None:
        self._json(
            "POST", f"/images/{quote(image, safe='')}/tag?repo={quote(repo)}&tag={quote(tag)}"
        )


def engine_error(status: int, body: bytes, path: str) -> DestinationError:
    """The engine's answer `status` to `path` as one line, with its JSON `message`."""
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    return DestinationError(f"Docker engine: {path}: {status} {message}".strip())
