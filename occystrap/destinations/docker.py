"""docker://[NAME[:TAG]] as a destination: the `docker save` stream of
`destinations/dockerarchive.py`, written into a Docker engine's `POST /images/load` as a
chunked request body, member by member (layer bytes go socket-ward with sendfile), so no
file of the whole image is made. The engine itself is `occystrap/engine.py`.
"""

from __future__ import annotations

import json
import socket

from occystrap.destinations.dockerarchive import DockerArchiveWriter
from occystrap.engine import API, Engine, UnixConnection, engine_error
from occystrap.errors import DestinationError, UsageError
from occystrap.messages import ImagePlan, LayerDesc


class LoadStream:
    """A chunked `POST /images/load` body that a TarStream writes into.

    Connects on first use, in the write process (never across a fork). `finish()` sends the
    last chunk and reads the engine's JSON progress stream, turning an error into a clear
    message; `abort()` drops the connection so the engine discards a partial upload.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: UnixConnection | None = None
        self.loaded: list[str] = []

    def _sock(self) -> socket.socket:
        if self._conn is None:
            conn = self.engine.connection()
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
            raise engine_error(resp.status, body, "/images/load")
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


class EngineWriter(DockerArchiveWriter):
    """Loads every image of the run into the engine in one `docker load` stream, sent when
    the run ends (`close(ok=True)`); `repo_tag` names every image so (docker://NAME:TAG)."""

    image_only = "docker:// (a Docker engine)"

    def __init__(self, engine: Engine, token: str, repo_tag: str | None) -> None:
        self.load = LoadStream(engine)
        super().__init__("", legacy=False, token=token, stream=self.load, repo_tag=repo_tag)
        self._zstd_ok = False  # the engine was checked for zstd support

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        if layer.compression == "zstd" and not self._zstd_ok:
            check_zstd_support(self.load.engine)
            self._zstd_ok = True
        super().add_layer(plan, layer)

    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        super().finish_image(plan, layers)
        return f"docker://{self.repo_tag or plan.repo_tag or plan.config_digest}"

    def close(self, ok: bool) -> None:
        if not (ok and self._images) or self._broken is not None:
            self.load.abort()
            return
        try:
            self._metadata()
            self._tar.close()
            self.load.finish()
        except OSError as exc:
            self.load.abort()
            raise DestinationError(
                f"Docker engine at {self.load.engine.socket_path}: {exc.strerror or exc}"
            ) from None


def check_zstd_support(engine: Engine) -> None:
    """UsageError when the engine is older than Docker 23, which cannot load zstd layers."""
    major = engine.version().split(".", 1)[0]
    if major.isdigit() and int(major) < 23:
        raise UsageError(
            f"the Docker engine at {engine.socket_path} is version "
            f"{engine.version()}: engines before 23 cannot load zstd layers; "
            "add --compression gzip"
        )
