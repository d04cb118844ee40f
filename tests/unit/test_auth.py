"""Challenge parsing, credential lookup and the token cache: pure logic, tested with tables."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest

from occystrap.errors import AuthError
from occystrap.registry.auth import (
    Challenge,
    Credentials,
    TokenCache,
    credentials_for,
    parse_challenges,
)

HUB_REALM = "https://auth.docker.io/token"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/alpine:pull"',
            [Challenge("bearer", {"realm": HUB_REALM, "service": "registry.docker.io",
                                  "scope": "repository:library/alpine:pull"})],
        ),
        (  # parameter order does not matter, nor does spacing around '=' and ','
            'Bearer scope="repository:a:pull" , service = "reg" ,realm="https://r/t"',
            [Challenge("bearer", {"scope": "repository:a:pull", "service": "reg",
                                  "realm": "https://r/t"})],
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
            [Challenge("basic", {"realm": "Registry Realm"}),
             Challenge("bearer", {"realm": "https://r/t", "service": "reg"})],
        ),
        (  # a challenge without parameters between two others
            'Negotiate, Basic realm="x", Bearer realm="y"',
            [Challenge("negotiate", {}), Challenge("basic", {"realm": "x"}),
             Challenge("bearer", {"realm": "y"})],
        ),
        (  # token68 form
            "Negotiate abc+/def==, Basic realm=x",
            [Challenge("negotiate", {}), Challenge("basic", {"realm": "x"})],
        ),
        (  # error parameters as sent with insufficient_scope
            'Bearer realm="https://r/t",service="reg",scope="repository:a:pull",'
            'error="insufficient_scope"',
            [Challenge("bearer", {"realm": "https://r/t", "service": "reg",
                                  "scope": "repository:a:pull", "error": "insufficient_scope"})],
        ),
        ("", []),
        ("   ,  ,", []),
        ('Basic realm="unterminated', [Challenge("basic", {"realm": "unterminated"})]),
        ("Basic", [Challenge("basic", {})]),
    ],
)
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _config(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


@pytest.mark.parametrize(
    ("host", "auths", "expected"),
    [
        ("reg.example.com", {"reg.example.com": {"auth": _auth("bob", "pw")}},
         Credentials("bob", "pw")),
        ("reg.example.com", {"https://reg.example.com": {"auth": _auth("bob", "p:w")}},
         Credentials("bob", "p:w")),
        ("reg.example.com:5000", {"http://reg.example.com:5000": {"auth": _auth("a", "b")}},
         Credentials("a", "b")),
        ("reg.example.com", {"https://reg.example.com/v1/": {"auth": _auth("a", "b")}},
         Credentials("a", "b")),
        ("reg.example.com", {"https://reg.example.com/v2/": {"auth": _auth("a", "b")}},
         Credentials("a", "b")),
        ("registry-1.docker.io", {"https://index.docker.io/v1/": {"auth": _auth("hub", "x")}},
         Credentials("hub", "x")),
        ("docker.io", {"https://index.docker.io/v1/": {"auth": _auth("hub", "x")}},
         Credentials("hub", "x")),
        ("reg.example.com", {"reg.example.com": {"username": "u", "password": "p"}},
         Credentials("u", "p")),
        ("reg.example.com",
         {"reg.example.com": {"auth": _auth("u", ""), "identitytoken": "refresh-me"}},
         Credentials("u", None, "refresh-me")),
        ("reg.example.com", {"reg.example.com": {}}, None),
        ("reg.example.com", {"other.example.com": {"auth": _auth("a", "b")}}, None),
        ("quay.io", {"https://index.docker.io/v1/": {"auth": _auth("hub", "x")}}, None),
    ],
)
def test_docker_config_lookup(
    tmp_path: Path, host: str, auths: dict[str, object], expected: Credentials | None
) -> None:
    path = _config(tmp_path, {"auths": auths, "credsStore": "desktop"})
    assert credentials_for(host, None, None, env={}, docker_config=path) == expected


def test_docker_config_dir_from_env(tmp_path: Path) -> None:
    _config(tmp_path, {"auths": {"r.example": {"auth": _auth("a", "b")}}})
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert credentials_for("r.example", None, None, env=env) == Credentials("a", "b")


def test_docker_config_in_home(tmp_path: Path) -> None:
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"r.example": {"auth": _auth("a", "b")}}})
    )
    assert credentials_for("r.example", None, None, env={"HOME": str(tmp_path)}) == Credentials(
        "a", "b"
    )


def test_missing_docker_config_is_anonymous(tmp_path: Path) -> None:
    assert credentials_for("r.example", None, None, env={"HOME": str(tmp_path)}) is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"auths": []}),
        json.dumps({"auths": {"r.example": "nope"}}),
        json.dumps({"auths": {"r.example": {"auth": "%%%notbase64-secretvalue"}}}),
        json.dumps({"auths": {"r.example": {"auth": base64.b64encode(b"nocolon").decode()}}}),
    ],
)
def test_malformed_docker_config(tmp_path: Path, content: str) -> None:
    path = _config(tmp_path, content)
    with pytest.raises(AuthError) as info:
        credentials_for("r.example", None, None, env={}, docker_config=path)
    message = str(info.value)
    assert path in message
    assert "secretvalue" not in message and "nocolon" not in message


def test_precedence(tmp_path: Path) -> None:
    path = _config(tmp_path, {"auths": {"r.example": {"auth": _auth("cfg", "cfgpw")}}})
    env = {"OCCYSTRAP_USERNAME": "envuser", "OCCYSTRAP_PASSWORD": "envpw"}
    assert credentials_for("r.example", "flag", "flagpw", env=env, docker_config=path) == (
        Credentials("flag", "flagpw")
    )
    assert credentials_for("r.example", None, None, env=env, docker_config=path) == (
        Credentials("envuser", "envpw")
    )
    assert credentials_for("r.example", None, None, env={}, docker_config=path) == (
        Credentials("cfg", "cfgpw")
    )


@pytest.mark.parametrize(
    "creds",
    [
        Credentials("bob", "hunter2"),
        Credentials("bob", None, "hunter2"),
        Credentials(None, "hunter2", "hunter2"),
    ],
)
def test_credentials_repr_hides_secrets(creds: Credentials) -> None:
    assert "hunter2" not in repr(creds)
    assert "hunter2" not in str(creds)
    assert "hunter2" not in f"{creds}"


def test_credentials_repr_shows_username() -> None:
    assert "bob" in repr(Credentials("bob", "x"))


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
