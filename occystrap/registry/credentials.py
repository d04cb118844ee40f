"""Where a registry's credentials come from: flags, environment, auth files, credential helpers.

The order (docs/cli.md has it as one table):

1. the role's flags (`--src-username`/`--dest-username`…), then `--username`/`--password`
   (each with its `OCCYSTRAP_*` variable; click reads those);
2. `OCCYSTRAP_USERNAME`/`OCCYSTRAP_PASSWORD` read here too, for callers that bypass click;
3. auth files, the first that knows the host wins. An explicit file (`--authfile` or
   `$REGISTRY_AUTH_FILE`) is the only one read, as in podman; otherwise, in the order
   containers-auth.json(5) documents: `${XDG_RUNTIME_DIR}/containers/auth.json` (else
   `/run/containers/<uid>/auth.json`), `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`,
   `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`), `~/.dockercfg`;
4. within a file, as docker does: `credHelpers[host]`, else `credsStore`, run as
   `docker-credential-<name>` (see credhelper.py), then the `auths` entry. A helper that
   has nothing for the host lets the entry (and the next file) speak.

Helper answers and errors are cached per host for the run: `warm()` asks in the parent
before the stages fork, so every stage inherits the answer and the helper runs once.
Secrets never appear in a repr, an exception message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from occystrap.errors import AuthError
from occystrap.registry import credhelper

DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "docker.io", "index.docker.io"})
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
MAX_AUTH_FILE = 4 * 2**20


@dataclass(frozen=True, repr=False)
class Credentials:
    """What we may present to a registry. The repr hides secrets so a stray log is harmless."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None

    def __repr__(self) -> str:
        password = "<hidden>" if self.password is not None else "None"
        token = "<hidden>" if self.identity_token is not None else "None"
        return (
            f"Credentials(username={self.username!r}, password={password}, identity_token={token})"
        )

    __str__ = __repr__

    @property
    def has_basic(self) -> bool:
        return self.username is not None and self.password is not None


class AuthFile(msgspec.Struct, frozen=True):
    """One file to look in; `legacy` is `~/.dockercfg`'s shape (the `auths` map at the top)."""

    path: str
    legacy: bool = False


def auth_files(
    env: Mapping[str, str], authfile: str | None = None, uid: int | None = None
) -> list[AuthFile]:
    """The auth files to read, in order (containers-auth.json(5), then docker's).

    An explicit `authfile` (`--authfile`, `$REGISTRY_AUTH_FILE`) replaces the search, as in
    podman and skopeo.
    """
    if authfile:
        return [AuthFile(authfile)]
    home = env.get("HOME") or os.path.expanduser("~")
    runtime = env.get("XDG_RUNTIME_DIR")
    primary = (
        os.path.join(runtime, "containers", "auth.json")
        if runtime
        else f"/run/containers/{os.getuid() if uid is None else uid}/auth.json"
    )
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    docker_dir = env.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    # $DOCKER_CONFIG names a directory; accept the file itself too.
    docker = docker_dir if docker_dir.endswith(".json") else os.path.join(docker_dir, "config.json")
    return [
        AuthFile(primary),
        AuthFile(os.path.join(config_home, "containers", "auth.json")),
        AuthFile(docker),
        AuthFile(os.path.join(home, ".dockercfg"), legacy=True),
    ]


def _host_of_key(key: str) -> str | None:
    """The registry host an entry's key names, lower-cased: `https://host:5000/v1/` and
    `host:5000` name `host:5000`. A namespace key (`quay.io/org/app`, podman's per-repository
    entries) gives None: credentials here are per host, so such an entry is not used."""
    text = key.strip()
    if "://" in text:
        return text.split("://", 1)[1].split("/", 1)[0].lower()
    if "/" in text.rstrip("/"):
        return None
    return text.rstrip("/").lower()


def _wanted_hosts(host: str) -> set[str]:
    if host.lower() in DOCKER_HUB_HOSTS:
        return set(DOCKER_HUB_HOSTS)
    return {host.lower()}


def _find(mapping: Mapping[str, object], host: str) -> list[tuple[str, object]]:
    """Entries of `mapping` for `host`: exact keys first (docker's own spellings), then any
    key naming the same host."""
    exact = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]
    if host.lower() in DOCKER_HUB_HOSTS:
        exact += [DOCKER_HUB_KEY, "docker.io", "index.docker.io"]
    found = [(k, mapping[k]) for k in exact if k in mapping]
    wanted = _wanted_hosts(host)
    found += [(k, v) for k, v in mapping.items() if k not in exact and _host_of_key(k) in wanted]
    return found


def _entry_credentials(entry: object, path: str, key: str) -> Credentials | None:
    where = f"malformed auth file {path}"
    if not isinstance(entry, dict):
        raise AuthError(f"{where}: entry for {key} is not an object")
    username = entry.get("username") or None
    password = entry.get("password") or None
    token = entry.get("identitytoken") or None
    encoded = entry.get("auth") or None
    if encoded is not None:
        try:
            decoded = base64.b64decode(str(encoded), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthError(f"{where}: 'auth' for {key} is not base64 of user:password") from None
        user, sep, secret = decoded.partition(":")
        if not sep:
            raise AuthError(f"{where}: 'auth' for {key} is not base64 of user:password")
        username = username or user or None
        password = password or secret or None
    if token is not None:
        # Docker stores a placeholder password next to an identity token; the token wins.
        return Credentials(username=username, password=None, identity_token=str(token))
    if username is None and password is None:
        return None  # an empty entry: docker writes these when a credsStore holds the secret
    return Credentials(username=username, password=password)


def _read(path: str) -> dict[str, object] | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_AUTH_FILE + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise AuthError(f"cannot read auth file {path}: {exc.strerror}") from None
    if len(raw) > MAX_AUTH_FILE:
        raise AuthError(f"auth file {path} is larger than {MAX_AUTH_FILE // 2**20} MiB; refused")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AuthError(f"malformed auth file {path}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise AuthError(f"malformed auth file {path}: top level is not an object")
    return doc


def _from_helper(
    name: object, host: str, origin: str, path: str, env: Mapping[str, str]
) -> Credentials | None:
    if not isinstance(name, str) or not name:
        raise AuthError(f"malformed auth file {path}: {origin.split(' ')[0]} is not a name")
    answer = credhelper.run_helper(name, host, f"{origin} in {path}", env)
    if answer is None:
        return None
    if answer.identity_token:
        return Credentials(identity_token=answer.secret)
    return Credentials(username=answer.username, password=answer.secret)


def from_file(
    host: str, file: AuthFile, helpers: bool = True, env: Mapping[str, str] = os.environ
) -> Credentials | None:
    """`host`'s credentials in one auth file (None when it has none, or does not exist):
    its credHelpers[host] helper, else its credsStore helper, else its `auths` entry."""
    doc = _read(file.path)
    if doc is None:
        return None
    auths = doc if file.legacy else doc.get("auths", {})
    if auths is None:
        auths = {}
    if not isinstance(auths, dict):
        raise AuthError(f"malformed auth file {file.path}: 'auths' is not an object")
    if helpers and not file.legacy:
        per_host = doc.get("credHelpers") or {}
        if not isinstance(per_host, dict):
            raise AuthError(f"malformed auth file {file.path}: 'credHelpers' is not an object")
        named = _find(per_host, host)
        store = doc.get("credsStore")
        creds = (
            _from_helper(named[0][1], host, "credHelpers", file.path, env)
            if named
            else _from_helper(store, host, "credsStore", file.path, env)
            if store
            else None
        )
        if creds is not None:
            return creds
    for key, entry in _find(auths, host):
        creds = _entry_credentials(entry, file.path, key)
        if creds is not None:
            return creds
    return None


class _Cache:
    """Per-run answers of the file and helper lookup, by (host, settings): a credential
    (or None), or the AuthError to raise again. Filled in the parent by warm() before the
    stages fork, so they inherit it; a host first met in a stage is looked up there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[tuple[object, ...], Credentials | AuthError | None] = {}

    def lookup(
        self, host: str, files: list[AuthFile], helpers: bool, env: Mapping[str, str]
    ) -> Credentials | None:
        key = (host.lower(), tuple(files), helpers)
        with self._lock:  # also keeps two threads from running one helper twice
            if key not in self._answers:
                try:
                    self._answers[key] = _search(host, files, helpers, env)
                except AuthError as exc:
                    self._answers[key] = exc
            answer = self._answers[key]
        if isinstance(answer, AuthError):
            raise AuthError(str(answer))
        return answer

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


def _search(
    host: str, files: list[AuthFile], helpers: bool, env: Mapping[str, str]
) -> Credentials | None:
    for file in files:
        creds = from_file(host, file, helpers, env)
        if creds is not None:
            return creds
    return None


CACHE = _Cache()


def credentials_for(
    host: str,
    username: str | None,
    password: str | None,
    env: Mapping[str, str] = os.environ,
    authfile: str | None = None,
    helpers: bool = True,
) -> Credentials | None:
    """Pick credentials for `host`: explicit flags, then environment, then auth files and the
    credential helpers they name (see the module docstring for the whole order).

    Explicit beats ambient so a user can override a stale login for one run. Raises
    AuthError (one line naming the file or the helper) when a file is malformed or a helper
    fails.
    """
    if username is not None or password is not None:
        return Credentials(username=username, password=password)
    env_user = env.get("OCCYSTRAP_USERNAME")
    env_pass = env.get("OCCYSTRAP_PASSWORD")
    if env_user or env_pass:
        return Credentials(username=env_user or None, password=env_pass or None)
    return CACHE.lookup(host, auth_files(env, authfile), helpers, env)


def warm(
    wanted: Iterable[tuple[str, str | None, str | None]],
    authfile: str | None,
    helpers: bool,
    env: Mapping[str, str] = os.environ,
) -> None:
    """Look up (host, username, password) triples now, so forked stages inherit the answers
    and each helper runs once per run. Errors are kept for the stage that needs the host:
    they fail that image, in its own words, not the whole run."""
    for host, username, password in wanted:
        try:
            credentials_for(host, username, password, env, authfile, helpers)
        except AuthError:
            pass
