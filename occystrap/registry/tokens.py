"""Bearer tokens (the distribution token spec, and Docker's OAuth2 refresh-token grant):
the request for one, the answer's verdict, and the cache. Pure: the request is sent by the
caller (`flow.RequestFlow.fetch_token`, through the transport seam), which owns retries so
every request in the tool follows one policy.

Secrets never appear in a repr, an exception message or a log line. The token server's
answer is not echoed either: some servers reflect the submitted form, which would leak a
refresh token.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import msgspec

from occystrap.errors import AuthError, OccystrapError, RegistryError, TransientError
from occystrap.registry.bodies import IDENTITY
from occystrap.registry.credentials import Credentials
from occystrap.registry.retry import RETRYABLE_STATUS, parse_retry_after

DEFAULT_TOKEN_LIFETIME = 60.0
# A JWT with many scopes is a few KiB; anything near this is not a token response.
MAX_TOKEN_RESPONSE = 1 << 20


class _Token(msgspec.Struct, frozen=True):
    value: str
    expires_at: float
    refresh_at: float

    def __repr__(self) -> str:  # a bearer token is a secret, wherever it is printed
        return f"_Token(<redacted>, expires_at={self.expires_at}, refresh_at={self.refresh_at})"


class TokenCache:
    """Bearer tokens by (realm, service, scope), shared by all fetch threads of one client.

    Tokens are dropped a little before expiry, so a long blob download does not start with a
    token that dies halfway through the request and costs a 401 round trip.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], _Token] = {}

    def _now(self) -> float:
        return self._clock()

    def get(self, realm: str, service: str, scope: str) -> str | None:
        key = (realm, service, scope)
        with self._lock:
            token = self._tokens.get(key)
            if token is None:
                return None
            if self._now() >= token.refresh_at:
                del self._tokens[key]
                return None
            return token.value

    def put(
        self, realm: str, service: str, scope: str, token: str, expires_in: float | None
    ) -> None:
        lifetime = DEFAULT_TOKEN_LIFETIME if not expires_in or expires_in <= 0 else expires_in
        margin = min(10.0, lifetime * 0.2)
        now = self._now()
        with self._lock:
            self._tokens[(realm, service, scope)] = _Token(
                value=token, expires_at=now + lifetime, refresh_at=now + lifetime - margin
            )

    def invalidate(self, realm: str, service: str, scope: str, token: str | None = None) -> None:
        """Forget a token the registry refused; only if it is still the one that was refused."""
        key = (realm, service, scope)
        with self._lock:
            current = self._tokens.get(key)
            if current is not None and (token is None or current.value == token):
                del self._tokens[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


def validate_realm(realm: str, host: str, registry_https: bool = False) -> str:
    """Refuse realms that are not plain http(s) URLs: they come from an untrusted server.

    A registry reached over https whose realm is plain http is a TLS-to-plaintext downgrade:
    the token request would carry the user's credentials (Basic, or a refresh token) and
    bring back a bearer token in the clear. It is refused (AuthError naming the realm's
    origin); there is no flag to allow it, a registry that wants plain HTTP is `--insecure`.
    """
    try:
        parts = urllib.parse.urlsplit(realm)
        realm_host = parts.hostname
    except ValueError:
        raise AuthError(
            f"authentication to {host} failed: unusable token realm in challenge"
        ) from None
    if parts.scheme not in ("http", "https") or not realm_host:
        raise AuthError(f"authentication to {host} failed: unusable token realm in challenge")
    if registry_https and parts.scheme == "http":
        raise AuthError(
            f"authentication to {host} failed: the registry is https but its token realm "
            f"http://{parts.netloc.rpartition('@')[2]}{parts.path} is plain http; refused "
            "(credentials and tokens would travel unencrypted)"
        )
    return realm


# RFC 6750 b64token is stricter; registries also hand out JWTs and opaque tokens, so any
# visible ASCII passes, and nothing that could end or split a header line does.
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")


def check_token(token: str, realm_host: str | None, host: str) -> str:
    """`token` if it can travel in an Authorization header; else AuthError, which is not a
    transient fault (the server gave it, asking again gets the same), and never quotes it."""
    if not _TOKEN_RE.match(token):
        raise AuthError(
            f"authentication to {host} failed: token server {realm_host} sent a token that "
            "is not a valid header value (control characters, spaces or non-ASCII); refused"
        )
    return token


@dataclass(frozen=True)
class TokenRequest:
    """One request to a token server, ready to send; its headers and body may hold
    credentials, so neither is in its repr."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = field(repr=False)
    host: str  # the registry the token is for
    realm_host: str | None  # the token server, for messages

    def where(self) -> str:
        return f"token server {self.realm_host} for {self.host}"


def token_request(
    host: str,
    realm: str,
    service: str | None,
    scope: str | None,
    credentials: Credentials | None,
    registry_https: bool = False,
) -> TokenRequest:
    """The request for a token of `scope` (AuthError for a realm we refuse, see
    `validate_realm`).

    With an identity token this is Docker's OAuth2 refresh-token grant (POST); otherwise a
    GET, with Basic credentials when we have them and anonymously otherwise. Several scopes
    (a push plus the pull on a mount's source) travel space-separated in `scope`: the token
    spec wants them as repeated `scope=` query parameters on the GET, and OAuth2 wants one
    space-delimited `scope` field in the POST form.
    """
    validate_realm(realm, host, registry_https)
    realm_host = urllib.parse.urlsplit(realm).hostname
    scopes = scope.split() if scope else []
    headers = dict(IDENTITY)
    if credentials is not None and credentials.identity_token:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.identity_token,
            "client_id": "occystrap",
        }
        if service:
            form["service"] = service
        if scopes:
            form["scope"] = " ".join(scopes)
        body = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Content-Length"] = str(len(body))
        return TokenRequest("POST", realm, headers, body, host, realm_host)
    params: list[tuple[str, str]] = []
    if service:
        params.append(("service", service))
    params += [("scope", s) for s in scopes]
    url = realm
    if params:
        parts = urllib.parse.urlsplit(realm)
        query = "&".join(q for q in (parts.query, urllib.parse.urlencode(params)) if q)
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    if credentials is not None and credentials.has_basic:
        headers["Authorization"] = basic_header(credentials)
    return TokenRequest("GET", url, headers, None, host, realm_host)


def token_failure(request: TokenRequest, exc: OccystrapError) -> OccystrapError:
    """The error for a token request that got no answer (`exc`, from the transport):
    TransientError when a retry may help, named after the token server."""
    if isinstance(exc, TransientError) and exc.reason == "timed out":
        return TransientError(f"{request.where()}: timed out", host=request.host)
    if not exc.retryable:
        return RegistryError(f"{request.where()}: {exc.reason}", host=request.host)
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else exc.reason
    return TransientError(f"cannot reach {request.where()}: {cause}", host=request.host)


def read_token_answer(
    request: TokenRequest, status: int, reason: str, headers: Mapping[str, str], body: bytes
) -> tuple[str, float | None]:
    """(token, expires_in) from the token server's answer (`body`: up to
    MAX_TOKEN_RESPONSE + 1 bytes, read raw). Raises AuthError (refused, malformed token),
    TransientError (worth retrying: 408, 429, 5xx) or RegistryError (an answer we cannot
    use)."""
    where, host = request.where(), request.host
    if status in (401, 403):
        raise AuthError(
            f"authentication to {host} failed: token server {request.realm_host} "
            f"answered {status} {reason}",
            host=host,
            status=status,
        )
    if status in RETRYABLE_STATUS:
        raise TransientError(
            f"{where}: {status} {reason}",
            host=host,
            status=status,
            retry_after=parse_retry_after(headers.get("retry-after"), time.time()),
        )
    if status != 200:
        raise RegistryError(f"{where}: unexpected {status} {reason}", host=host, status=status)
    if len(body) > MAX_TOKEN_RESPONSE:
        raise RegistryError(
            f"{where}: the answer is larger than "
            f"{MAX_TOKEN_RESPONSE // 2**20} MiB; a token answer is a few KiB, "
            "refused",
            host=host,
        )
    try:
        doc = json.loads(body)
    except ValueError:
        raise RegistryError(f"{where}: answer is not JSON", host=host) from None
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{where}: answer holds no token", host=host)
    check_token(token, request.realm_host, host)
    expires_in = doc.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) else None
    return token, lifetime


def basic_header(credentials: Credentials) -> str:
    """`Basic <base64(user:password)>` (RFC 7617)."""
    raw = f"{credentials.username or ''}:{credentials.password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
