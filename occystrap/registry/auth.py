"""Registry authentication: what the server asks for (WWW-Authenticate challenges, RFC 9110
§11.6.1) and the Authorization header each request gets. Where credentials come from (flags,
auth files, credential helpers) is credentials.py; tokens are tokens.py.

Pure: the challenge parser is tested with tables, and the `Authenticator` does no I/O. When
it needs a Bearer token it builds the `TokenRequest` and hands it to the `fetch` function
its caller passes in (httpx's auth flows yield the requests they need; this is the same
contract without generators), so it holds no reference back to the client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import msgspec

from occystrap.errors import AuthError
from occystrap.registry.credentials import Credentials
from occystrap.registry.tokens import (
    TokenCache,
    TokenRequest,
    basic_header,
    token_request,
    validate_realm,
)

__all__ = ["Authenticator", "Challenge", "Credentials", "TokenFetch", "parse_challenges"]

#: Sends a token request and returns (token, expires_in seconds or None); raises what
#: `tokens.read_token_answer` raises.
TokenFetch = Callable[[TokenRequest], tuple[str, float | None]]


class Challenge(msgspec.Struct, frozen=True):
    """One challenge from a WWW-Authenticate header; names are lower-cased for lookups."""

    scheme: str
    params: dict[str, str] = msgspec.field(default_factory=dict)


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


class Authenticator:
    """Decides the Authorization header per scope, shared by every thread of a client.

    After the first challenge the scheme (and a Bearer realm) is remembered, so the next
    repository gets its token before its first request instead of after a 401 round trip.
    Every method that may need a token takes the caller's `fetch`; AuthError when the
    registry's challenge cannot be met.
    """

    def __init__(self, host: str, credentials: Credentials | None, registry_https: bool) -> None:
        self._host = host
        self._credentials = credentials
        self._https = registry_https
        self._tokens = TokenCache()
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._scheme: str | None = None
        self._realm: tuple[str, str] | None = None

    def header(self, scope: str, fetch: TokenFetch) -> str | None:
        """The Authorization value for a request needing `scope`, or None (none known yet)."""
        with self._lock:
            scheme, realm = self._scheme, self._realm
        if scheme == "basic" and self._credentials is not None:
            return basic_header(self._credentials)
        if scheme == "bearer" and realm is not None:
            return f"Bearer {self._token(realm, scope, None, fetch)}"
        return None

    def _token(
        self, realm: tuple[str, str], scope: str, refused: str | None, fetch: TokenFetch
    ) -> str:
        url, service = realm
        if refused is not None:
            self._tokens.invalidate(url, service, scope, refused)
        token = self._tokens.get(url, service, scope)
        if token is not None:
            return token
        # One fetch per scope even when eight threads start on the same repository at once.
        with self._fetch_lock:
            token = self._tokens.get(url, service, scope)
            if token is None:
                token, expires_in = fetch(
                    token_request(self._host, url, service, scope, self._credentials, self._https)
                )
                self._tokens.put(url, service, scope, token, expires_in)
        return token

    def on_unauthorized(
        self, www_authenticate: str | None, scope: str, sent: str | None, fetch: TokenFetch
    ) -> None:
        """Learn from a 401 (its WWW-Authenticate value; `sent`: the Authorization that was
        refused) so the next try carries what the registry asks for; a refused token is
        dropped and a new one fetched. AuthError when that cannot succeed."""
        host = self._host
        by_scheme = {c.scheme: c for c in parse_challenges(www_authenticate or "")}
        if "bearer" in by_scheme:
            params = by_scheme["bearer"].params
            realm_url = params.get("realm")
            if not realm_url:
                raise AuthError(
                    f"authentication to {host} failed: Bearer challenge without realm",
                    host=host,
                    status=401,
                )
            validate_realm(realm_url, host, self._https)
            realm = (realm_url, params.get("service", ""))
            with self._lock:
                self._scheme, self._realm = "bearer", realm
            refused = sent[len("Bearer ") :] if sent and sent.startswith("Bearer ") else None
            self._token(realm, scope, refused, fetch)
            return
        if "basic" in by_scheme:
            creds = self._credentials
            if creds is None or not creds.has_basic:
                raise AuthError(
                    f"authentication to {host} failed: the registry requires credentials",
                    host=host,
                    status=401,
                )
            if sent is not None and sent.startswith("Basic "):
                raise AuthError(
                    f"authentication to {host} failed: credentials refused", host=host, status=401
                )
            with self._lock:
                self._scheme = "basic"
            return
        raise AuthError(
            f"authentication to {host} failed: no supported challenge in 401 answer",
            host=host,
            status=401,
        )
