"""Streaming a blob to a file with inline sha256, resuming a broken stream with Range.

Shaped like pip's `_FileDownload`: the state of one download in a dataclass (`BlobDownload`),
and small steps: `run` (open the file, retry attempts, verify), `_attempt` (one GET, with
`Range: bytes=N-` once N bytes are in), `_restart` (the server ignored Range or resumed
elsewhere: back to byte 0), `_receive` (the body into the file and the hash).

Which exceptions arrive where: the client's request raises what its layers raise once
their retries are spent (TransientError, final) or at once (NotFoundError, AuthError,
RegistryError): those end the download. A body that breaks off mid-stream raises a retryable
TransientError from `Response.chunks`: `retrying` spends one retry of the blob's budget on it
and the next attempt asks for the rest. An OSError can only come from the file (the
transport maps network ones): DestinationError. Size and digest mismatches are DigestError.
On every failure a file we created is truncated to zero, never left looking complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Callable
from typing import BinaryIO

import msgspec

from occystrap.errors import DestinationError, DigestError, RegistryError, TransientError
from occystrap.files import start_writeback
from occystrap.reference import digest_of_hash
from occystrap.registry.answers import check_status
from occystrap.registry.counters import COUNTERS
from occystrap.registry.flow import Requester
from occystrap.registry.retry import Budget, Pause, retrying
from occystrap.registry.transport import BLOB_BUFFER, Response
from occystrap.registry.urls import announced_end, redact, resume_offset

log = logging.getLogger(__name__)


class BlobDownload(msgspec.Struct):
    """Blob `digest` of repository `name` (at `url`) on its way into `dest`.

    With `offset`, `dest` is an existing file (a tarball being assembled) and the blob goes
    into the region that starts there: nothing outside it is written or truncated, so
    `size` must be given. `on_progress(n)` is called after each chunk; when the download
    restarts from zero it is called once with the negative count already reported. A
    region's writeback to disk starts once the blob is verified (the archive is fsynced
    whole at its end), and so does a whole file's with `writeback` (a file the destination
    keeps as it is).
    """

    request: Requester
    host: str
    name: str
    digest: str
    url: str
    size: int | None
    dest: str
    budget: Budget
    on_progress: Callable[[int], None] | None = None
    offset: int | None = None
    writeback: bool = False  # start writing it to disk once verified (region: always)
    written: int = 0
    hasher: hashlib._Hash = msgspec.field(default_factory=hashlib.sha256)
    buffer: bytearray = msgspec.field(default_factory=lambda: bytearray(BLOB_BUFFER))
    out: BinaryIO | None = None

    @property
    def where(self) -> str:
        return f"{self.host}/{self.name}"

    def run(self, pause: Pause) -> int:
        """Download, verify, and return the number of bytes written (see the module
        docstring for what is raised)."""
        if self.offset is not None and self.size is None:
            raise ValueError("writing at an offset needs the blob's size")
        out = self._open()
        try:
            retrying(self.budget, self._attempt, pause)
            out.flush()
            self._verify()
            if self.offset is not None or self.writeback:  # a region, or a file kept as it is
                start_writeback(out.fileno(), self.offset or 0, self.written)
            return self.written
        except BaseException as exc:
            self._truncate()
            if isinstance(exc, OSError):  # the file's: the transport maps network ones
                raise DestinationError(f"cannot write {self.dest}: {exc.strerror}") from None
            raise
        finally:
            out.close()

    def _open(self) -> BinaryIO:
        try:
            if self.offset is None:
                self.out = open(self.dest, "wb")
            else:
                self.out = os.fdopen(os.open(self.dest, os.O_WRONLY), "wb")
                self.out.seek(self.offset)
        except OSError as exc:
            raise DestinationError(f"cannot write {self.dest}: {exc.strerror}") from None
        return self.out

    def _attempt(self) -> None:
        while True:
            headers = {"Accept-Encoding": "identity"}
            if self.written:
                headers["Range"] = f"bytes={self.written}-"
            response = self.request(
                "GET", self.url, name=self.name, headers=headers, budget=self.budget
            )
            try:
                check_status(
                    response,
                    "GET",
                    self.url,
                    self.host,
                    f"blob {self.digest} not found in {self.where}",
                    ok=(200, 206),
                )
                start = resume_offset(response.status, response.headers.get("content-range"))
                if start != self.written:
                    # The server ignored Range (200) or resumed elsewhere: start over.
                    log.debug(
                        "blob %s: no resume at byte %d; restarting", self.digest, self.written
                    )
                    self._restart()
                    if start != 0:  # asked again at once: no wait, one retry spent
                        if self.budget.exhausted():
                            raise RegistryError(
                                f"GET {redact(self.url)}: the registry answers Range "
                                "requests with the wrong part of the blob",
                                host=self.host,
                                status=response.status,
                            )
                        self.budget.used += 1
                        continue
                self._receive(response)
                return
            finally:
                response.close()

    def _restart(self) -> None:
        assert self.out is not None
        self.out.seek(self.offset or 0)
        if self.offset is None:
            self.out.truncate()
        self.hasher = hashlib.sha256()
        if self.on_progress is not None and self.written:
            self.on_progress(-self.written)
        self.written = 0

    def _receive(self, response: Response) -> None:
        assert self.out is not None
        size = self.size
        announced = announced_end(
            self.written,
            response.headers.get("content-length"),
            response.headers.get("content-range"),
        )
        if size is not None and announced is not None and announced > size:
            # Extra bytes are this blob's fault, not the network's: no Range retry, and
            # nothing past `size` is read or waited for.
            response.abort()
            raise DigestError(
                f"blob {self.digest} from {self.where}: the registry announces "
                f"{announced} bytes, the manifest says {size}",
                host=self.host,
            )
        update, write, report = self.hasher.update, self.out.write, self.on_progress
        # Never past `size`: at an offset, the next region is another blob's.
        limit = size - self.written if size is not None else sys.maxsize
        try:
            for chunk in response.chunks(self.buffer, limit):
                n = len(chunk)
                update(chunk)
                write(chunk)
                self.written += n
                COUNTERS.add("bytes_received", n)
                if report is not None:
                    report(n)
        except TransientError as exc:
            log.debug("blob %s: %s at byte %d; resuming", self.digest, exc, self.written)
            raise TransientError(
                f"GET {redact(self.url)}: {exc}", host=self.host, reason=exc.reason
            ) from exc

    def _verify(self) -> None:
        if self.size is not None and self.written != self.size:
            raise DigestError(
                f"blob {self.digest} from {self.where}: got {self.written} "
                f"bytes, expected {self.size}",
                host=self.host,
            )
        got = digest_of_hash(self.hasher)
        if got != self.digest:
            raise DigestError(f"blob {self.digest} from {self.where}: got {got}", host=self.host)

    def _truncate(self) -> None:
        if self.offset is not None or self.out is None:
            return
        try:
            self.out.seek(0)
            self.out.truncate()
        except (OSError, ValueError):
            pass
