"""Challenge parsing and the token cache: pure logic, tested with tables (credential lookup:
test_credentials.py)."""

from __future__ import annotations

import threading

import pytest

from occystrap.errors import AuthError
from occystrap.registry.auth import Challenge, parse_challenges
from occystrap.registry.tokens import TokenCache, check_token, validate_realm

HUB_REALM = "https://auth.docker.io/token"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/alpine:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": HUB_REALM,
                        "service": "registry.docker.io",
                        "scope": "repository:library/alpine:pull",
                    },
                )
            ],
        ),
        (  # parameter order does not matter, nor does spacing around '=' and ','
            'Bearer scope="repository:a:pull" , service = "reg" ,realm="https://r/t"',
            [
                Challenge(
                    "bearer",
                    {"scope": "repository:a:pull", "service": "reg", "realm": "https://r/t"},
                )
            ],
        ),
        (  # commas inside a quoted value
            'Bearer realm="https://r/t",scope="repository:a:pull,push"',
            [Challenge("bearer", {"realm": "https://r/t", "scope": "repository:a:pull,push"})],
        ),
        (  # escapes inside quotes
            r'Basic realm="say \"hi\" \\ there"',
            [Challenge("basic", {"realm": 'say "hi" \\ there'})],
        ),
        (  # unquoted tokens, upper-case scheme and names
            "BEARER Realm=https://r/t, Service=reg",
            [Challenge("bearer", {"realm": "https://r/t", "service": "reg"})],
        ),
        (  # several challenges in one header
            'Basic realm="Registry Realm", Bearer realm="https://r/t",service="reg"',
            [
                Challenge("basic", {"realm": "Registry Realm"}),
                Challenge("bearer", {"realm": "https://r/t", "service": "reg"}),
            ],
        ),
        (  # a challenge without parameters between two others
            'Negotiate, Basic realm="x", Bearer realm="y"',
            [
                Challenge("negotiate", {}),
                Challenge("basic", {"realm": "x"}),
                Challenge("bearer", {"realm": "y"}),
            ],
        ),
        (  # token68 form
            "Negotiate abc+/def==, Basic realm=x",
            [Challenge("negotiate", {}), Challenge("basic", {"realm": "x"})],
        ),
        (  # error parameters as sent with insufficient_scope
            'Bearer realm="https://r/t",service="reg",scope="repository:a:pull",'
            'error="insufficient_scope"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://r/t",
                        "service": "reg",
                        "scope": "repository:a:pull",
                        "error": "insufficient_scope",
                    },
                )
            ],
        ),
        ("", []),
        ("   ,  ,", []),
        ('Basic realm="unterminated', [Challenge("basic", {"realm": "unterminated"})]),
        ("Basic", [Challenge("basic", {})]),
    ],
)
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_cache_expiry() -> None:
    clock = _Clock()
    cache = TokenCache(clock=clock)
    cache.put("realm", "svc", "repository:a:pull", "tok", 300)
    assert cache.get("realm", "svc", "repository:a:pull") == "tok"
    assert cache.get("realm", "svc", "repository:b:pull") is None
    assert cache.get("other", "svc", "repository:a:pull") is None
    clock.now += 295  # within 10 s of expiry: dropped, so no request starts with a dying token
    assert cache.get("realm", "svc", "repository:a:pull") is None
    assert len(cache) == 0


def test_token_cache_default_lifetime() -> None:
    clock = _Clock()
    cache = TokenCache(clock=clock)
    cache.put("realm", "svc", "s", "tok", None)
    clock.now += 45
    assert cache.get("realm", "svc", "s") == "tok"
    clock.now += 10
    assert cache.get("realm", "svc", "s") is None


def test_token_cache_invalidate_only_the_refused_token() -> None:
    cache = TokenCache()
    cache.put("realm", "svc", "s", "new", 60)
    cache.invalidate("realm", "svc", "s", "old")  # another thread already refreshed it
    assert cache.get("realm", "svc", "s") == "new"
    cache.invalidate("realm", "svc", "s", "new")
    assert cache.get("realm", "svc", "s") is None


def test_token_cache_threads() -> None:
    cache = TokenCache()

    def work(i: int) -> None:
        for j in range(200):
            cache.put("r", "s", f"scope{j % 7}", f"t{i}", 60)
            cache.get("r", "s", f"scope{(j + i) % 7}")
            cache.invalidate("r", "s", f"scope{j % 5}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) <= 7


# -- hostile challenges and tokens ------------------------------------------------------------


def test_https_registry_with_plain_http_realm_is_a_downgrade() -> None:
    realm = "http://auth.example:8080/token?x=1"
    with pytest.raises(AuthError, match=r"realm http://auth\.example:8080/token is plain http"):
        validate_realm(realm, "reg.example", registry_https=True)
    assert validate_realm(realm, "reg.example", registry_https=False) == realm  # --insecure
    assert validate_realm("https://auth.example/t", "reg.example", registry_https=True)


def test_downgrade_message_hides_userinfo_and_query() -> None:
    with pytest.raises(AuthError) as info:
        validate_realm("http://u:pw-secret@auth.example/t?k=v", "reg", registry_https=True)
    assert "pw-secret" not in str(info.value) and "k=v" not in str(info.value)


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "a b", "tök", "", "tab\tbed"])
def test_malformed_tokens_are_refused_without_quoting(token: str) -> None:
    with pytest.raises(AuthError) as info:
        check_token(token, "auth.example", "reg.example")
    assert "not a valid header value" in str(info.value)
    assert (token or "\0") not in str(info.value)


def test_jwt_like_tokens_pass() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_+/=="
    assert check_token(jwt, "auth.example", "reg.example") == jwt
