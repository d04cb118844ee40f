"""The request path of a registry client: layers around the transport seam, each written once.

    send ─► _send_handling_auth        401 → the Authenticator learns the challenge → again
            └► _send_handling_redirects GET/HEAD follow Location; credentials stay on origin
               └► _send_handling_retries transport failures, 408/429/5xx: backoff, Retry-After
                  └► _send_single_request rate limit, counters, transport.send, RateLimit-*

The shape is httpx's (`_send_handling_auth` → `_send_handling_redirects` →
`_send_single_request`), with retries as the innermost wrapper as in go-containerregistry
(its retry transport sits under the bearer one): a retry repeats the hop that failed, so a
redirect target that answers 503 is asked again, not the registry that sent us there.

Statuses other than 401, redirects and retryable ones are returned as they are for the
caller to interpret (404 means different things). Only GET and HEAD follow redirects:
re-sending an upload body elsewhere is a decision the spec leaves to us, and we decline it.
With `retry=False` (an upload that carries part of a blob) a transport failure is raised as a
TransientError and a retryable status returned: a half-sent chunk may have moved the
registry's offset, and only the caller can ask where the upload stands. With `auth=False`
(another API on the host) no registry credential is sent and a 401 is the caller's to read.

Token requests go through the same transport but not the layers: they are neither counted
nor rate limited (as before the split), and retried by `fetch_token`'s own call of
`retrying`.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from typing import Protocol

from occystrap.errors import AuthError, OccystrapError, RegistryError, TransientError
from occystrap.registry import ratelimit
from occystrap.registry.auth import Authenticator
from occystrap.registry.bodies import EncodedAnswer, check_identity
from occystrap.registry.counters import COUNTERS
from occystrap.registry.retry import RETRYABLE_STATUS, Budget, parse_retry_after, retrying
from occystrap.registry.tokens import (
    MAX_TOKEN_RESPONSE,
    TokenRequest,
    read_token_answer,
    token_failure,
)
from occystrap.registry.transport import Body, Response, Transport
from occystrap.registry.urls import Origin, origin, redact

MAX_REDIRECTS = 5
MAX_AUTH_ROUNDS = 2  # answers to a 401 per request; the next 401 is final
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Requester(Protocol):
    """What downloads and uploads send through: `RegistryClient._request`, which names the
    repository (`name`) and what it does to it (`push`, `mount_from`) instead of a scope."""

    def __call__(
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
    ) -> Response: ...


class RequestFlow:
    """Sends requests to one registry (`base_url`) through `transport`; thread-safe."""

    def __init__(
        self,
        host: str,
        base_url: str,
        transport: Transport,
        auth: Authenticator,
        retries: int,
        waits: ratelimit.Waits,
    ) -> None:
        self.host = host
        self.origin: Origin = origin(base_url)
        self.retries = retries
        self.transport = transport
        self.auth = auth
        self.waits = waits

    def send(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        budget: Budget | None = None,
        body: Body = None,
        retry: bool = True,
        auth: bool = True,
    ) -> Response:
        """The first final answer to `method url` (see the module docstring); the caller
        closes it. `scope` is the token scope it needs (`urls.scope`); `budget` the
        operation's retries when it spans several requests. Raises AuthError, RegistryError,
        TransientError (retries spent, or at once with `retry=False`)."""
        return self._send_handling_auth(
            method,
            url,
            dict(headers or {}),
            body,
            scope,
            budget or Budget(self.retries),
            retry,
            auth,
        )

    def on_registry(self, url: str) -> bool:
        return origin(url) == self.origin

    # -- the layers, outermost first -------------------------------------------------------

    def _send_handling_auth(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Body,
        scope: str,
        budget: Budget,
        retry: bool,
        use_auth: bool,
    ) -> Response:
        rounds = 0
        while True:
            sent = (
                self.auth.header(scope, self.fetch_token)
                if use_auth and self.on_registry(url)
                else None
            )
            response = self._send_handling_redirects(
                method, url, headers, body, sent, budget, retry
            )
            if not (response.status == 401 and use_auth and self.on_registry(response.url)):
                return response
            challenge = response.headers.get("www-authenticate")
            response.close()
            if rounds >= MAX_AUTH_ROUNDS:
                raise AuthError(
                    f"authentication to {self.host} failed: {method} "
                    f"{redact(response.url)} answered 401 Unauthorized with fresh "
                    "credentials",
                    host=self.host,
                    status=401,
                )
            rounds += 1
            self.auth.on_unauthorized(challenge, scope, sent, self.fetch_token)

    def _send_handling_redirects(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Body,
        sent: str | None,
        budget: Budget,
        retry: bool,
    ) -> Response:
        current, redirects = url, 0
        while True:
            hop = dict(headers)
            if not self.on_registry(current):  # a caller's own credential stays here too
                hop.pop("Authorization", None)
            elif sent is not None:
                hop["Authorization"] = sent
            response = self._send_handling_retries(method, current, hop, body, budget, retry)
            if response.status not in _REDIRECTS or method not in ("GET", "HEAD"):
                return response
            location = response.headers.get("location")
            response.close()
            redirects += 1
            if not location or redirects > MAX_REDIRECTS:
                raise RegistryError(
                    f"{method} {redact(url)}: too many or broken redirects",
                    host=self.host,
                    status=response.status,
                )
            current = urllib.parse.urljoin(current, location)
            if urllib.parse.urlsplit(current).scheme not in ("http", "https"):
                raise RegistryError(
                    f"{method} {redact(url)}: redirect to a non-HTTP URL",
                    host=self.host,
                    status=response.status,
                )

    def _send_handling_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
        budget: Budget,
        retry: bool,
    ) -> Response:
        if not retry:
            return self._send_single_request(method, url, headers, body)
        where = f"{method} {redact(url)}"

        def attempt() -> Response:
            response = self._send_single_request(method, url, headers, body)
            if response.status not in RETRYABLE_STATUS:
                return response
            response.close()
            raise TransientError(
                f"{where}: {response.status} {response.reason}",
                host=self.host,
                status=response.status,
                retry_after=parse_retry_after(response.headers.get("retry-after"), time.time()),
            )

        def why(exc: TransientError) -> str:  # an answer names itself; a failure does not
            return str(exc) if exc.status else f"{where}: {exc}"

        def give_up(exc: TransientError, attempts: int) -> OccystrapError:
            if exc.status:
                return exc.spent(attempts)
            return exc.spent(
                attempts, f"cannot reach registry {self.host}: {exc} ({where}, {attempts} attempts)"
            )

        return retrying(budget, attempt, self.waits.pause, why=why, give_up=give_up)

    def _send_single_request(
        self, method: str, url: str, headers: Mapping[str, str], body: Body
    ) -> Response:
        limiter = ratelimit.current()
        if limiter is not None:
            limiter.acquire(self.host)
        COUNTERS.request(url)
        try:
            response = self.transport.send(method, url, headers, body)
        except RegistryError as exc:
            if exc.retryable:
                exc.host = self.host
                raise
            raise RegistryError(
                f"cannot reach registry {self.host}: {exc}", host=self.host, reason=exc.reason
            ) from None
        if response.status == 429:
            COUNTERS.add("throttled")
        pause = ratelimit.pause_for(
            response.headers.get("ratelimit-limit"), response.headers.get("ratelimit-remaining")
        )
        if pause:
            self.waits.wait(
                pause, "the registry says its rate limit is nearly spent (RateLimit-Remaining)"
            )
        return response

    # -- tokens ----------------------------------------------------------------------------

    def fetch_token(self, request: TokenRequest) -> tuple[str, float | None]:
        """Send a token request (the Authenticator's `fetch`), with retries."""
        return retrying(Budget(self.retries), lambda: self._token_once(request), self.waits.pause)

    def _token_once(self, request: TokenRequest) -> tuple[str, float | None]:
        try:
            response = self.transport.send(
                request.method, request.url, request.headers, request.body
            )
        except RegistryError as exc:
            raise token_failure(request, exc) from exc
        try:
            body = b""
            if response.status == 200:
                check_identity(response.headers)
                body = response.read(MAX_TOKEN_RESPONSE)
        except EncodedAnswer as exc:
            raise RegistryError(f"{request.where()}: {exc.describe()}", host=self.host) from None
        except RegistryError as exc:
            raise token_failure(request, exc) from exc
        finally:
            response.close()
        return read_token_answer(request, response.status, response.reason, response.headers, body)
