"""Pushing a blob: the upload state machine of distribution-spec "Pushing blobs".

`UploadSession` does one blob into one repository:

    open (POST) ─► monolithic PUT ?digest=         blobs up to CHUNKED_THRESHOLD
               └─► PATCH chunk … ─► PUT ?digest=  bigger blobs, and after a broken PUT
    any failure ─► recover: wait, GET the session (204 + Range: 0-N) ─► go on from N + 1
                   a session the registry lost ─► cancel it (DELETE), open a new one
    mount (POST ?mount=&from=) ─► 201 mounted, or 202: declined, session cancelled

Each step that carries part of the blob is sent once (`retry=False`): a half-sent chunk may
have moved the registry's offset, so a failure is raised as a retryable TransientError and
the one retry loop (`retry.retrying`) spends a retry of the blob's `--retries` budget on it,
waits, and makes the next attempt start with `_recover`. Steps without a body (POST, GET,
HEAD, DELETE) are retried inside the request path, on the same budget. An abandoned
session is deleted (best effort) so registries with quotas do not count it.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Protocol

import msgspec

from occystrap.errors import DigestError, OccystrapError, RegistryError, TransientError
from occystrap.registry.answers import refuse
from occystrap.registry.counters import COUNTERS
from occystrap.registry.flow import Requester
from occystrap.registry.retry import (
    RETRYABLE_STATUS,
    Budget,
    Pause,
    parse_retry_after,
    retrying,
)
from occystrap.registry.transport import FileRegion, Response, ShortSource
from occystrap.registry.urls import Origin, range_end, redact, upload_location, with_digest

log = logging.getLogger(__name__)

# Blobs above this go up in chunks (PATCH) so a broken connection costs one chunk, not the
# blob; below it one PUT is two requests in all (monolithic measured 290 MB/s against 245
# chunked into the local registry, which also spends less CPU on it). Module constants so
# tests can shrink them.
CHUNKED_THRESHOLD = 256 * 2**20
CHUNK_SIZE = 32 * 2**20
UPLOAD_CONTENT_TYPE = "application/octet-stream"


class Growing(Protocol):
    """A source file still being written (destinations/inflight.py's BlobInFlight): the
    upload sends only bytes already there, and commits only once they are verified."""

    def ready(self, end: int) -> int:
        """Block until bytes [0, end) are in the file and return how many it holds (raise
        to abandon the upload)."""

    def verified(self) -> None:
        """Block until every byte is in and its digest was checked (raise to abandon)."""


class Registry(msgspec.Struct, frozen=True):
    """Where uploads go: the registry's base URL, host (for messages) and origin (upload
    locations elsewhere are refused)."""

    base_url: str
    host: str
    origin: Origin


class Progress:
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


class UploadSession(msgspec.Struct):
    """Blob `digest` going into repository `name`; `location` is where the registry wants
    the next request, `done` how many bytes it holds. Not shared between threads.
    `exists(name, digest)` is the client's blob HEAD (a lost answer to the final PUT)."""

    request: Requester
    registry: Registry
    name: str
    digest: str
    budget: Budget
    pause: Pause
    exists: Callable[[str, str], int | None]
    location: str = ""
    min_chunk: int = 0
    done: int = 0
    _broken: bool = False

    @property
    def what(self) -> str:
        return f"blob {self.digest} to {self.registry.host}/{self.name}"

    # -- the whole upload ------------------------------------------------------------------

    def upload(
        self, size: int, src: str, offset: int, progress: Progress, growing: Growing | None = None
    ) -> None:
        """Bytes [offset, offset+size) of `src` as the blob (see the module docstring).
        With `growing`, `src` is still being written: one PATCH carries the whole blob, its
        body sent as the bytes arrive (a broken one resumes from the registry's offset, as
        chunks do), and the committing PUT waits for `growing.verified()`.
        Raises DigestError (the file is short, or the registry refused the digest),
        TransientError (retries spent), AuthError, RegistryError, and whatever `growing`
        raises to abandon it."""
        self.open()
        monolithic = size <= CHUNKED_THRESHOLD and growing is None
        # a blob in flight: one PATCH whose body follows the file (8 MiB PATCHes cost the
        # registry a saved hash state each, measured slower than no streaming at all)
        step = size if growing is not None else CHUNK_SIZE
        follow = growing.ready if growing is not None else None

        def attempt() -> None:
            nonlocal monolithic
            if self._broken:
                self._recover()
                progress.rewind(self.done)
            self._broken = True
            if monolithic:
                monolithic = False  # after a broken PUT, chunks from where it stands
                self._put_whole(size, src, offset, progress)
            else:
                while self.done < size:
                    chunk = min(max(self.min_chunk, step), size - self.done)
                    self._patch(FileRegion(src, offset + self.done, chunk, progress.add, follow))
                if growing is not None:
                    growing.verified()
                self._finish()
            self._broken = False

        def give_up(exc: TransientError, attempts: int) -> OccystrapError:
            return exc.spent(attempts, f"{self.what}: {exc} after {attempts} attempts")

        try:
            retrying(self.budget, attempt, self.pause, give_up=give_up)
        except ShortSource as exc:  # the file shrank under us after the size check
            self.cancel()
            raise DigestError(f"{self.what}: {exc}", host=self.registry.host) from None
        except Exception:
            self.cancel()
            raise

    # -- steps: each raises a retryable TransientError when the upload can be recovered ----

    def open(self) -> None:
        """POST a new upload session (retried in the request path: it carries no body)."""
        start = f"{self.registry.base_url}/v2/{self.name}/blobs/uploads/"
        response = self.request("POST", start, name=self.name, push=True, budget=self.budget)
        try:
            if response.status != 202:
                refuse(response, "POST", start, self.registry.host, self.what)
            location = response.headers.get("location")
            if not location:
                raise RegistryError(
                    f"{self.what}: POST {redact(start)} answered 202 without Location",
                    host=self.registry.host,
                    status=202,
                )
            try:
                min_chunk = int(response.headers.get("oci-chunk-min-length") or 0)
            except ValueError:
                min_chunk = 0
        finally:
            response.close()
        self.location = self._resolve(start, location)
        self.min_chunk = max(min_chunk, 0)
        self.done = 0

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: FileRegion | None
    ) -> Response:
        """One request that is not retried here: a failure to send is for `_recover`."""
        try:
            return self.request(
                method,
                url,
                name=self.name,
                push=True,
                headers=headers,
                budget=self.budget,
                body=body,
                retry=False,
            )
        except TransientError as exc:
            if not exc.retryable:
                raise
            raise TransientError(
                f"{method} {redact(url)}: {exc}", host=self.registry.host, reason=exc.reason
            ) from exc

    def _put_whole(self, size: int, src: str, offset: int, progress: Progress) -> None:
        target = with_digest(self.location, self.digest)
        headers = {"Content-Type": UPLOAD_CONTENT_TYPE, "Content-Length": str(size)}
        response = self._send("PUT", target, headers, FileRegion(src, offset, size, progress.add))
        try:
            self._completed(response, "PUT", target)
        finally:
            response.close()

    def _patch(self, region: FileRegion) -> None:
        """Send one chunk; on success the registry holds `done` + its size."""
        start, end = self.done, self.done + region.size - 1
        headers = {
            "Content-Type": UPLOAD_CONTENT_TYPE,
            "Content-Length": str(region.size),
            "Content-Range": f"{start}-{end}",
        }
        url = self.location
        response = self._send("PATCH", url, headers, region)
        try:
            if response.status == 202:
                accepted = range_end(response.headers.get("range"))
                if accepted is not None and accepted != end:
                    # The registry kept a different amount: ask it and resume from there.
                    raise TransientError(
                        f"PATCH {redact(url)}: registry holds up to byte {accepted}",
                        0.0,
                        host=self.registry.host,
                    )
                location = response.headers.get("location")
                if location:
                    self.location = self._resolve(url, location)
                self.done = end + 1
                return
            self._recoverable(response, "PATCH", url)
        finally:
            response.close()

    def _finish(self) -> None:
        """The committing PUT; when its answer is lost, the blob may be in all the same."""
        target = with_digest(self.location, self.digest)
        headers = {"Content-Type": UPLOAD_CONTENT_TYPE, "Content-Length": "0"}
        try:
            response = self._send("PUT", target, headers, None)
            try:
                self._completed(response, "PUT", target)
            finally:
                response.close()
        except TransientError as exc:
            if not exc.retryable or self.exists(self.name, self.digest) is None:
                raise

    def _completed(self, response: Response, method: str, url: str) -> None:
        """Judge the answer to a committing PUT: return when the blob is in."""
        if response.status == 201:
            served = response.headers.get("docker-content-digest")
            if served and served != self.digest:
                raise DigestError(
                    f"{self.what}: the registry stored it as {served}",
                    host=self.registry.host,
                    status=201,
                )
            return
        self._recoverable(response, method, url)

    def _recoverable(self, response: Response, method: str, url: str) -> None:
        """A retryable status, or 404/416 (the session is gone or out of step: recovery
        starts a new one), raises a retryable TransientError; any other is final."""
        if response.status in RETRYABLE_STATUS or response.status in (404, 416):
            raise TransientError(
                f"{method} {redact(url)}: {response.status} {response.reason}",
                host=self.registry.host,
                status=response.status,
                retry_after=_retry_after(response),
            )
        refuse(response, method, url, self.registry.host, self.what)

    def _recover(self) -> None:
        """After a failed step (and its wait): ask where the session stands.

        A session the registry no longer knows (or has cancelled because its offset went
        wrong, as distribution does after a broken PATCH) is replaced by a new one from
        offset 0.
        """
        response = self.request("GET", self.location, name=self.name, push=True, budget=self.budget)
        try:
            if response.status == 204:
                end = range_end(response.headers.get("range"))
                location = response.headers.get("location")
                if location:
                    self.location = self._resolve(self.location, location)
                self.done = end + 1 if end is not None else 0
                return
        finally:
            response.close()
        log.debug("%s: upload session lost (%d); starting a new one", self.what, response.status)
        self.cancel()
        self.open()

    def cancel(self) -> None:
        """DELETE an abandoned session, once, ignoring every failure: it is only tidying."""
        if not self.location:
            return
        try:
            response = self.request(
                "DELETE", self.location, name=self.name, push=True, budget=Budget(0)
            )
            response.close()
        except OccystrapError as exc:
            log.debug("cancelling upload %s: %s", redact(self.location), exc)

    def _resolve(self, request_url: str, location: str) -> str:
        return upload_location(request_url, location, self.registry.origin, self.what)

    # -- mounting instead of uploading -----------------------------------------------------

    def mount(self, from_name: str) -> bool:
        """Ask the registry to link the blob from repository `from_name` (distribution-spec
        "Mounting a blob from another repository"). True when mounted (201). A 202 means the
        registry declined and opened an upload session instead: it is deleted at once, and
        the caller falls back to an upload."""
        query = urllib.parse.urlencode({"mount": self.digest, "from": from_name})
        url = f"{self.registry.base_url}/v2/{self.name}/blobs/uploads/?{query}"
        response = self.request("POST", url, name=self.name, push=True, mount_from=from_name)
        try:
            if response.status == 201:
                COUNTERS.add("mounts")
                return True
            if response.status == 202:
                location = response.headers.get("location")
                if location:
                    try:
                        self.location = self._resolve(url, location)
                    except RegistryError:
                        return False  # never send anything to a foreign host, not even DELETE
                    response.close()
                    self.cancel()
                return False
            refuse(response, "POST", url, self.registry.host, self.what)
        finally:
            response.close()


def _retry_after(response: Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"), time.time())
