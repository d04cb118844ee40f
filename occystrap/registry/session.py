"""`RegistrySession`: one registry host's request path, which `RegistryClient` (`client.py`)
builds its operations on.

Every request goes through `_request` → `flow.RequestFlow` (auth → redirects → retries →
the transport seam), so auth, retry and rate-limit behaviour cannot drift apart between
kinds of request. Small answers (manifests, configs, listing pages, another API's documents)
are read within a cap, and a body that breaks off is retried as the whole request.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import TracebackType
from typing import Self

from occystrap.errors import TransientError
from occystrap.registry.answers import check_status
from occystrap.registry.auth import Authenticator
from occystrap.registry.credentials import Credentials
from occystrap.registry.flow import RequestFlow
from occystrap.registry.ratelimit import Waits
from occystrap.registry.retry import Budget, retrying
from occystrap.registry.tls import ssl_context
from occystrap.registry.transport import Body, Response, Transport, open_transport
from occystrap.registry.upload import Registry
from occystrap.registry.urls import origin, redact, scope


class RegistrySession:
    """The request path to one registry host (thread-safe). `transport` replaces the
    network (tests pass a mock one)."""

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
        transport: Transport | None = None,
    ) -> None:
        self.host = host
        self.base_url = f"{'http' if insecure else 'https'}://{host}"
        self._retries = max(retries, 0)
        self._waits = Waits(host)
        self._transport = transport or open_transport(
            functools.partial(ssl_context, tls_verify, ca_file), timeout, pool_size
        )
        self._auth = Authenticator(host, credentials, not insecure)
        self._flow = RequestFlow(
            host, self.base_url, self._transport, self._auth, self._retries, self._waits
        )
        self._registry = Registry(self.base_url, host, origin(self.base_url))

    # -- another API on this host ----------------------------------------------------------

    def get_api(self, url: str, headers: Mapping[str, str], cap: int) -> tuple[int, bytes]:
        """GET a document from another HTTP API on this host (Quay's REST API): (status, up
        to `cap` + 1 bytes of body). The same TLS settings, rate limit, retries (429 and
        5xx, Retry-After) and counters as registry requests, but none of the registry's
        credentials: `headers` carries the API's own, and never leaves this origin."""
        response, body = self._get_small(url, None, headers, cap, None, auth=False)
        return response.status, body

    # -- reading small answers -------------------------------------------------------------

    def _get_small(
        self,
        url: str,
        name: str | None,
        headers: Mapping[str, str],
        cap: int,
        not_found: str | None,
        auth: bool = True,
    ) -> tuple[Response, bytes]:
        """GET a small body (up to `cap` + 1 bytes), retrying a body that breaks off as the
        whole request: one shared budget for both. `not_found=None`: any status is the
        caller's to read."""
        budget = Budget(self._retries)

        def attempt() -> tuple[Response, bytes]:
            return self._get_page(url, name, headers, not_found, cap, budget=budget, auth=auth)

        return retrying(budget, attempt, self._waits.pause)

    def _get_page(
        self,
        url: str,
        name: str | None,
        headers: Mapping[str, str],
        not_found: str | None,
        cap: int,
        *,
        budget: Budget | None = None,
        auth: bool = True,
        absent: tuple[int, ...] = (),
    ) -> tuple[Response, bytes]:
        """One GET of a small body; a body that breaks off is a TransientError naming the
        request (retryable: `_get_small` retries it, listings do not). A status in `absent`
        comes back with no body."""
        response = self._request("GET", url, name=name, headers=headers, budget=budget, auth=auth)
        try:
            if response.status in absent:
                return response, b""
            if not_found is not None:
                check_status(response, "GET", url, self.host, not_found)
            return response, response.read(cap)
        except TransientError as exc:
            if not exc.retryable:
                raise
            raise TransientError(
                f"GET {redact(url)}: {exc}", host=self.host, reason=exc.reason
            ) from exc
        finally:
            response.close()

    # -- the one request path --------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        name: str | None,
        headers: Mapping[str, str] | None = None,
        budget: Budget | None = None,
        push: bool = False,
        mount_from: str | None = None,
        body: Body = None,
        retry: bool = True,
        auth: bool = True,
    ) -> Response:
        """Send through the request path (`flow.RequestFlow.send`, whose docstring says what
        comes back and what is raised) with the token scope `name`, `push` and `mount_from`
        need. The caller closes the response."""
        return self._flow.send(
            method,
            url,
            scope=scope(name, push, mount_from),
            headers=headers,
            budget=budget,
            body=body,
            retry=retry,
            auth=auth,
        )

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
