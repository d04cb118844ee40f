"""The httpx implementation of the transport seam, for URLs the environment sends through a
proxy (`http_proxy`, `https_proxy`, `all_proxy`, minus `no_proxy`): http.client does not
speak to proxies, httpx does. The only registry module that imports httpx."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping

import httpx

from occystrap.registry.bodies import IDENTITY, EncodedAnswer, check_identity, read_raw
from occystrap.registry.transport import Body, FileRegion, Response, encoded, failure


class HttpxResponse:
    """An httpx streaming response behind the `transport.Response` protocol."""

    def __init__(self, response: httpx.Response, url: str) -> None:
        self._response = response
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.headers: Mapping[str, str] = response.headers
        self.url = url

    def read(self, cap: int) -> bytes:
        """Up to `cap` + 1 bytes as they came over the wire (see `bodies`); an encoded
        answer is a RegistryError, not a retry: asking again gets the same answer."""
        try:
            check_identity(self.headers)
        except EncodedAnswer as exc:
            raise encoded(self.url, exc) from None
        try:
            return read_raw(self._response.iter_raw(), cap)
        except httpx.TransportError as exc:
            raise failure(exc) from exc

    def chunks(self, buffer: bytearray, limit: int) -> Iterator[memoryview | bytes]:
        try:
            for chunk in self._response.iter_raw(len(buffer)):
                if len(chunk) >= limit:
                    yield chunk[:limit]
                    return
                limit -= len(chunk)
                yield chunk
        except httpx.TransportError as exc:
            raise failure(exc) from exc

    def close(self) -> None:
        self._response.close()

    def abort(self) -> None:
        self.close()


class HttpxTransport:
    """Sends through an httpx.Client that honours the environment's proxies; one SSLContext
    with the direct path, HTTP/1.1 only (HTTP/2's default windows are slow for blobs)."""

    def __init__(self, ssl_context: ssl.SSLContext, timeout: float, pool_size: int) -> None:
        self._http = httpx.Client(
            headers=IDENTITY,  # answers read into memory are never decoded (see bodies)
            verify=ssl_context,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            follow_redirects=False,
            http2=False,
        )

    def send(
        self, method: str, url: str, headers: Mapping[str, str], body: Body = None
    ) -> Response:
        content = body.chunks() if isinstance(body, FileRegion) else body
        try:
            request = self._http.build_request(method, url, headers=headers, content=content)
            response = self._http.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:
            raise failure(exc) from exc
        return HttpxResponse(response, url)

    def close(self) -> None:
        self._http.close()
