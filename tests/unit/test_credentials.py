"""Where credentials come from: flags, environment, the auth files in podman's order and
docker's config, and what credential helpers answer. Pure lookups, tested with tables on
files in a temp dir; the real helper (docker-credential-pass) is exercised in
tests/functional/test_credentials.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from occystrap.errors import AuthError
from occystrap.registry import credentials
from occystrap.registry.credentials import AuthFile, Credentials, auth_files, credentials_for
from occystrap.registry.credhelper import HelperAnswer, parse_answer, server_url


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    credentials.CACHE.clear()


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _config(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


@pytest.mark.parametrize(
    ("host", "auths", "expected"),
    [
        (
            "reg.example.com",
            {"reg.example.com": {"auth": _auth("bob", "pw")}},
            Credentials("bob", "pw"),
        ),
        (
            "reg.example.com",
            {"https://reg.example.com": {"auth": _auth("bob", "p:w")}},
            Credentials("bob", "p:w"),
        ),
        (
            "reg.example.com:5000",
            {"http://reg.example.com:5000": {"auth": _auth("a", "b")}},
            Credentials("a", "b"),
        ),
        (
            "reg.example.com",
            {"https://reg.example.com/v1/": {"auth": _auth("a", "b")}},
            Credentials("a", "b"),
        ),
        (
            "reg.example.com",
            {"https://reg.example.com/v2/": {"auth": _auth("a", "b")}},
            Credentials("a", "b"),
        ),
        (
            "registry-1.docker.io",
            {"https://index.docker.io/v1/": {"auth": _auth("hub", "x")}},
            Credentials("hub", "x"),
        ),
        (
            "docker.io",
            {"https://index.docker.io/v1/": {"auth": _auth("hub", "x")}},
            Credentials("hub", "x"),
        ),
        (
            "reg.example.com",
            {"reg.example.com": {"username": "u", "password": "p"}},
            Credentials("u", "p"),
        ),
        (
            "reg.example.com",
            {"reg.example.com": {"auth": _auth("u", ""), "identitytoken": "refresh-me"}},
            Credentials("u", None, "refresh-me"),
        ),
        ("reg.example.com", {"reg.example.com": {}}, None),
        ("reg.example.com", {"other.example.com": {"auth": _auth("a", "b")}}, None),
        ("quay.io", {"https://index.docker.io/v1/": {"auth": _auth("hub", "x")}}, None),
    ],
)
def test_docker_config_lookup(
    tmp_path: Path, host: str, auths: dict[str, object], expected: Credentials | None
) -> None:
    # credsStore is what `docker login` writes beside such entries; with helpers off (as
    # --no-credential-helpers) only the entries speak
    path = _config(tmp_path, {"auths": auths, "credsStore": "desktop"})
    assert credentials_for(host, None, None, env={}, authfile=path, helpers=False) == expected


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
        credentials_for("r.example", None, None, env={}, authfile=path)
    message = str(info.value)
    assert path in message
    assert "secretvalue" not in message and "nocolon" not in message


def test_precedence(tmp_path: Path) -> None:
    path = _config(tmp_path, {"auths": {"r.example": {"auth": _auth("cfg", "cfgpw")}}})
    env = {"OCCYSTRAP_USERNAME": "envuser", "OCCYSTRAP_PASSWORD": "envpw"}
    assert credentials_for("r.example", "flag", "flagpw", env=env, authfile=path) == (
        Credentials("flag", "flagpw")
    )
    assert credentials_for("r.example", None, None, env=env, authfile=path) == (
        Credentials("envuser", "envpw")
    )
    assert credentials_for("r.example", None, None, env={}, authfile=path) == (
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


# -- the auth files, in podman's documented order ---------------------------------------------


def test_auth_file_order(tmp_path: Path) -> None:
    env = {"HOME": "/h", "XDG_RUNTIME_DIR": "/run/user/7", "XDG_CONFIG_HOME": "/cfg"}
    assert auth_files(env) == [
        AuthFile("/run/user/7/containers/auth.json"),
        AuthFile("/cfg/containers/auth.json"),
        AuthFile("/h/.docker/config.json"),
        AuthFile("/h/.dockercfg", legacy=True),
    ]
    # without the XDG variables: containers/image's fallbacks
    assert auth_files({"HOME": "/h", "DOCKER_CONFIG": "/d"}, uid=7) == [
        AuthFile("/run/containers/7/auth.json"),
        AuthFile("/h/.config/containers/auth.json"),
        AuthFile("/d/config.json"),
        AuthFile("/h/.dockercfg", legacy=True),
    ]
    # --authfile / $REGISTRY_AUTH_FILE: that file alone, as podman and skopeo do
    assert auth_files(env, authfile="/x/auth.json") == [AuthFile("/x/auth.json")]


def _write(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _home(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}


def test_first_file_that_knows_the_host_wins(tmp_path: Path) -> None:
    env = _home(tmp_path)
    _write(
        tmp_path / ".docker" / "config.json",
        {
            "auths": {
                "r.example": {"auth": _auth("docker", "d")},
                "only.docker": {"auth": _auth("docker", "d")},
            }
        },
    )
    _write(
        tmp_path / ".config" / "containers" / "auth.json",
        {"auths": {"r.example": {"auth": _auth("xdg-config", "c")}}},
    )
    assert credentials_for("r.example", None, None, env=env) == Credentials("xdg-config", "c")
    _write(
        tmp_path / "run" / "containers" / "auth.json",
        {"auths": {"r.example": {"auth": _auth("podman", "p")}}},
    )
    credentials.CACHE.clear()
    assert credentials_for("r.example", None, None, env=env) == Credentials("podman", "p")
    # a host the earlier files do not know falls through to docker's config
    assert credentials_for("only.docker", None, None, env=env) == Credentials("docker", "d")
    # an explicit auth file is the only one read
    explicit = tmp_path / "explicit.json"
    _write(explicit, {"auths": {}})
    assert credentials_for("only.docker", None, None, env=env, authfile=str(explicit)) is None


def test_legacy_dockercfg(tmp_path: Path) -> None:
    _write(tmp_path / ".dockercfg", {"https://r.example": {"auth": _auth("old", "o")}})
    assert credentials_for("r.example", None, None, env=_home(tmp_path)) == Credentials("old", "o")


def test_podman_spellings(tmp_path: Path) -> None:
    """podman writes Docker Hub as `docker.io` and may scope an entry to a namespace."""
    path = _config(
        tmp_path,
        {
            "auths": {
                "docker.io": {"auth": _auth("hub", "h")},
                "quay.io/team/app": {"auth": _auth("scoped", "s")},
            }
        },
    )
    assert credentials_for(
        "registry-1.docker.io", None, None, env={}, authfile=path
    ) == Credentials("hub", "h")
    # credentials are per host here: a namespace-scoped entry is not used for the host
    assert credentials_for("quay.io", None, None, env={}, authfile=path) is None


# -- credential helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (b'{"ServerURL":"r","Username":"bob","Secret":"pw"}', HelperAnswer("bob", "pw", False)),
        (
            b'{"ServerURL":"r","Username":"<token>","Secret":"refresh"}',
            HelperAnswer(None, "refresh", True),
        ),
        # docker-credential-helpers 0.6 (Debian 12) answers an unknown server like this
        (b'{"ServerURL":"r","Username":"","Secret":""}', None),
    ],
)
def test_parse_answer(stdout: bytes, expected: HelperAnswer | None) -> None:
    assert parse_answer(stdout) == expected


@pytest.mark.parametrize("stdout", [b"not json", b"[]", b'{"Username": 5, "Secret": "x"}'])
def test_parse_answer_refuses_nonsense(stdout: bytes) -> None:
    with pytest.raises(ValueError):
        parse_answer(stdout)


def test_helper_answer_repr_hides_the_secret() -> None:
    assert "hunter2" not in repr(HelperAnswer("bob", "hunter2", False))


def test_server_url_is_what_docker_login_stores() -> None:
    assert server_url("registry-1.docker.io") == "https://index.docker.io/v1/"
    assert server_url("127.0.0.1:5000") == "127.0.0.1:5000"


def _no_helpers_on(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bin").mkdir(exist_ok=True)
    return {"HOME": str(tmp_path), "PATH": str(tmp_path / "bin")}


@pytest.mark.parametrize(
    ("doc", "helper", "origin"),
    [
        ({"credsStore": "desktop"}, "docker-credential-desktop", "credsStore"),
        (
            {"credsStore": "desktop", "credHelpers": {"r.example:5000": "ecr-login"}},
            "docker-credential-ecr-login",
            "credHelpers",
        ),
        # docker matches credHelpers by host, whatever spelling the key has
        (
            {"credHelpers": {"https://r.example:5000": "gcloud"}},
            "docker-credential-gcloud",
            "credHelpers",
        ),
    ],
)
def test_missing_helper_is_one_clear_line(
    tmp_path: Path, doc: dict[str, object], helper: str, origin: str
) -> None:
    path = _config(tmp_path, {**doc, "auths": {"r.example:5000": {}}})
    with pytest.raises(AuthError) as info:
        credentials_for("r.example:5000", None, None, env=_no_helpers_on(tmp_path), authfile=path)
    message = str(info.value)
    assert "\n" not in message
    assert helper in message and "r.example:5000" in message and origin in message
    assert "not installed" in message and "--no-credential-helpers" in message


def test_helpers_off_uses_the_entries(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        {
            "credsStore": "desktop",
            "credHelpers": {"r.example": "ecr-login"},
            "auths": {"r.example": {"auth": _auth("a", "b")}},
        },
    )
    assert credentials_for(
        "r.example", None, None, env=_no_helpers_on(tmp_path), authfile=path, helpers=False
    ) == Credentials("a", "b")


def test_helper_in_a_host_not_asked_for_is_not_run(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        {"credHelpers": {"gcr.io": "gcloud"}, "auths": {"r.example": {"auth": _auth("a", "b")}}},
    )
    assert credentials_for(
        "r.example", None, None, env=_no_helpers_on(tmp_path), authfile=path
    ) == Credentials("a", "b")


@pytest.mark.parametrize("name", ["../../bin/sh", "", 7])
def test_helper_names_are_checked(tmp_path: Path, name: object) -> None:
    path = _config(
        tmp_path, {"credsStore": name} if name != "" else {"credHelpers": {"r.example": ""}}
    )
    with pytest.raises(AuthError) as info:
        credentials_for("r.example", None, None, env=_no_helpers_on(tmp_path), authfile=path)
    assert path in str(info.value) and "\n" not in str(info.value)


def test_errors_are_cached_and_raised_again(tmp_path: Path) -> None:
    """warm() keeps a failure for the stage that needs the host, and the helper is not run
    again there."""
    path = _config(tmp_path, {"credsStore": "desktop"})
    env = _no_helpers_on(tmp_path)
    credentials.warm([("r.example", None, None)], authfile=path, helpers=True, env=env)
    (tmp_path / "bin" / "docker-credential-desktop").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "docker-credential-desktop").chmod(0o755)
    with pytest.raises(AuthError, match="not installed"):
        credentials_for("r.example", None, None, env=env, authfile=path)
    # flags need no lookup, whatever the files say
    assert credentials_for("r.example", "u", "p", env=env, authfile=path) == Credentials("u", "p")
