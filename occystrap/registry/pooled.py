"""An http.client answer behind the transport seam's `Response` protocol
(`transport.py`): case-insensitive headers, a small body read within a cap, a blob's body
read into a reused buffer, and the connection handed back to `HTTPTransport`'s pool once the
body is read to the end. Also how a failure during a request is mapped to the error tree,
for every transport (`failure`, `encoded`).
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator, Mapping

from occystrap.errors import OccystrapError, RegistryError, TransientError, from_library
from occystrap.registry.bodies import EncodedAnswer, check_identity
from occystrap.registry.urls import redact

MAX_DRAIN = 64 * 2**10  # an unread body up to this is read to keep the connection


def failure(exc: BaseException) -> OccystrapError:
    """What a library raised during a request, as the error tree says (errors.py)."""
    mapped = from_library(exc, network=True)
    if mapped is None:  # from_library knows every exception the callers catch
        raise exc
    return mapped


def encoded(url: str, exc: EncodedAnswer) -> RegistryError:
    """The error for an answer encoded although identity was asked for."""
    return RegistryError(f"GET {redact(url)}: {exc.describe()}", code="encoded")


class HeaderView(Mapping[str, str]):
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


class PooledResponse:
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
        self.headers: Mapping[str, str] = HeaderView(response.headers)
        self.url = url

    def read(self, cap: int) -> bytes:
        try:
            check_identity(self.headers)
        except EncodedAnswer as exc:
            raise encoded(self.url, exc) from None
        response, data = self._response, bytearray()
        try:
            while len(data) <= cap:
                piece = response.read(cap + 1 - len(data))
                if not piece:
                    # http.client's read(n) reports an early close as a normal end (only
                    # read() raises IncompleteRead): check what the length still owes.
                    if response.length:
                        raise TransientError(
                            f"connection closed after {len(data)} bytes of the body"
                        )
                    break
                data += piece
        except (OSError, http.client.HTTPException) as exc:
            raise failure(exc) from exc
        return bytes(data)

    def chunks(self, buffer: bytearray, limit: int) -> Iterator[memoryview | bytes]:
        view = memoryview(buffer)
        response = self._response
        readinto = response.readinto
        received = 0
        try:
            while received < limit:
                n = readinto(
                    buffer if limit - received >= len(buffer) else view[: limit - received]
                )
                if not n:
                    # http.client reports an early close as a normal end: check the length.
                    if response.length:
                        raise TransientError(
                            f"connection closed after {received} bytes of the body"
                        )
                    return
                received += n
                yield view[:n]
        except (OSError, http.client.HTTPException) as exc:
            raise failure(exc) from exc

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
        if remaining is not None and 0 <= remaining <= MAX_DRAIN:
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
