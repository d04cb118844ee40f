"""Registry authentication: what the server asks for, and tokens. Where credentials come from
(flags, auth files, credential helpers) is credentials.py.

The challenge parser is pure so it can be tested with tables; only
`fetch_token` talks to the network, and it does one request: the client owns retries so every
request in the tool follows one policy.

Secrets never appear in a repr, an exception message or a log line. The token server's answer is
not echoed either: some servers reflect the submitted form, which would leak a refresh token.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx

from occystrap.errors import AuthError, RegistryError, TransientError
from occystrap.registry.bodies import IDENTITY, EncodedAnswer, check_identity, read_raw
from occystrap.registry.credentials import Credentials
from occystrap.registry.retry import RETRYABLE_STATUS, parse_retry_after

DEFAULT_TOKEN_LIFETIME = 60.0
# A JWT with many scopes is a few KiB; anything near this is not a token response.
MAX_TOKEN_RESPONSE = 1 << 20


@dataclass(frozen=True)
class Challenge:
    """One challenge from a WWW-Authenticate header; names are lower-cased for lookups."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


# RFC 9110 §5.6.2: tchar.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = " \t"


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def skip_ws_and_commas(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS + ",":
            self.pos += 1

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def bare(self) -> str:
        """An unquoted value; lenient beyond RFC tokens because some servers send bare URLs."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _WS + ",":
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        """Read a quoted-string (the opening quote is current); an unterminated one runs to end."""
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if ch == '"':
                break
            out.append(ch)
        return "".join(out)

    def looks_like_param(self) -> bool:
        """True when a `name = value` pair starts here rather than the next challenge's scheme."""
        saved = self.pos
        try:
            if not self.token():
                return False
            self.skip_ws()
            if self.peek() != "=":
                return False
            self.pos += 1
            self.skip_ws()
            # `token68==` ends in '=' padding: that is not a parameter.
            return self.peek() not in ("", ",", "=")
        finally:
            self.pos = saved


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value into challenges (RFC 7235 §4.1).

    Registries disagree on parameter order and quoting, and scopes contain commas
    (`repository:a:pull,push`), so a split on ',' is wrong; this is a small scanner instead.
    Malformed tails are skipped rather than raised: a partially understood challenge is still
    better than none, and the caller reports a missing realm clearly.
    """
    scanner = _Scanner(header or "")
    challenges: list[Challenge] = []
    while True:
        scanner.skip_ws_and_commas()
        if scanner.at_end():
            break
        scheme = scanner.token()
        if not scheme:
            scanner.pos += 1  # not a token character: skip the junk
            continue
        params: dict[str, str] = {}
        scanner.skip_ws()
        if not scanner.looks_like_param() and scanner.peek() not in ("", ","):
            # token68 (e.g. `Negotiate abc==`): consume it; we have no use for it.
            scanner.token()
            while scanner.peek() in ("=", "/"):
                scanner.pos += 1
                scanner.token()
        while True:
            scanner.skip_ws()
            mark = scanner.pos
            scanner.skip_ws_and_commas()
            if not scanner.looks_like_param():
                scanner.pos = mark
                break
            name = scanner.token().lower()
            scanner.skip_ws()
            scanner.pos += 1  # '='
            scanner.skip_ws()
            value = scanner.quoted() if scanner.peek() == '"' else scanner.bare()
            params.setdefault(name, value)
        challenges.append(Challenge(scheme=scheme.lower(), params=params))
    return challenges


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float
    refresh_at: float


class TokenCache:
    """Bearer tokens by (realm, service, scope), shared by all fetch threads of one client.

    Tokens are dropped a little before expiry, so a long blob download does not start with a
    token that dies halfway through the request and costs a 401 round trip.
    """

    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], _Token] = {}

    def _now(self) -> float:
        return self._clock()  # type: ignore[operator]

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
        realm_host = None
    if parts.scheme not in ("http", "https") or not realm_host:
        raise AuthError(f"authentication to {host} failed: unusable token realm in challenge")
    if registry_https and parts.scheme == "http":
        raise AuthError(
            f"authentication to {host} failed: the registry is https but its token realm "
            f"http://{parts.netloc.rpartition('@')[2]}{parts.path} is plain http; refused "
            "(credentials and tokens would travel unencrypted)")
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
            "is not a valid header value (control characters, spaces or non-ASCII); refused")
    return token


def fetch_token(
    http: httpx.Client,
    host: str,
    realm: str,
    service: str | None,
    scope: str | None,
    credentials: Credentials | None,
    registry_https: bool = False,
) -> tuple[str, float | None]:
    """One request to the token server; returns (token, expires_in).

    With an identity token this is Docker's OAuth2 refresh-token grant (POST); otherwise a GET,
    with Basic credentials when we have them and anonymously otherwise. The answer is read
    raw within MAX_TOKEN_RESPONSE (`bodies`), and the token checked before it is kept.
    Raises AuthError (refused, downgrade, malformed token), TransientError (worth retrying)
    or RegistryError (an answer we cannot use).
    """
    validate_realm(realm, host, registry_https)
    realm_host = urllib.parse.urlsplit(realm).hostname
    # Several scopes (a push plus the pull on a mount's source) travel space-separated in
    # `scope`: the token spec wants them as repeated `scope=` query parameters on the GET, and
    # OAuth2 wants one space-delimited `scope` field in the POST form.
    scopes = scope.split() if scope else []
    try:
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
            request = http.build_request("POST", realm, data=form, headers=IDENTITY)
        else:
            params: list[tuple[str, str]] = []
            if service:
                params.append(("service", service))
            params += [("scope", s) for s in scopes]
            request = http.build_request("GET", realm, params=params, headers=IDENTITY)
            if credentials is not None and credentials.has_basic:
                request.headers["Authorization"] = basic_header(credentials)
        response = http.send(request, stream=True, follow_redirects=False)
        try:
            body = b""
            if response.status_code == 200:
                check_identity(response.headers)
                body = read_raw(response.iter_raw(), MAX_TOKEN_RESPONSE)
        finally:
            response.close()
    except EncodedAnswer as exc:
        raise RegistryError(f"token server {realm_host} for {host}: {exc.describe()}") from None
    except httpx.TimeoutException as exc:
        raise TransientError(f"token server {realm_host} for {host}: timed out") from exc
    except httpx.LocalProtocolError:
        raise RegistryError(f"token server {realm_host} for {host}: the request is not valid "
                            "HTTP (a header value or the URL; not shown)") from None
    except httpx.TransportError as exc:
        raise TransientError(
            f"cannot reach token server {realm_host} for {host}: {type(exc).__name__}"
        ) from exc
    status = response.status_code
    if status in (401, 403):
        raise AuthError(
            f"authentication to {host} failed: token server {realm_host} answered "
            f"{status} {response.reason_phrase}"
        )
    if status in RETRYABLE_STATUS:
        raise TransientError(
            f"token server {realm_host} for {host}: {status} {response.reason_phrase}",
            retry_after=parse_retry_after(response.headers.get("retry-after"), time.time()),
        )
    if status != 200:
        raise RegistryError(
            f"token server {realm_host} for {host}: unexpected {status} {response.reason_phrase}"
        )
    if len(body) > MAX_TOKEN_RESPONSE:
        raise RegistryError(f"token server {realm_host} for {host}: the answer is larger than "
                            f"{MAX_TOKEN_RESPONSE // 2**20} MiB; a token answer is a few KiB, "
                            "refused")
    try:
        doc = json.loads(body)
    except ValueError:
        raise RegistryError(f"token server {realm_host} for {host}: answer is not JSON") from None
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"token server {realm_host} for {host}: answer holds no token")
    check_token(token, realm_host, host)
    expires_in = doc.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) else None
    return token, lifetime


def basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username or ''}:{credentials.password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")

