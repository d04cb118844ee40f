"""Docker credential helpers: `docker-credential-<name> get`, as docker runs them.

Protocol (docker/docker-credential-helpers, `client.Get`): the helper is run with the single
argument `get`, the server URL on stdin (no newline), and answers on stdout with
`{"ServerURL": ..., "Username": ..., "Secret": ...}`. A `Username` of `<token>` means the
secret is an identity token (an OAuth2 refresh token), not a password. An unknown server is
a non-zero exit whose output says "credentials not found"; old helpers (Debian 12's 0.6.4)
answer an empty Username and Secret with exit 0 instead. Both mean "no credentials here".

Nothing the helper prints is ever shown: a failing helper's output may hold a secret. The
error names the helper, the registry and the exit status, and how to see the helper's own
words (run it by hand).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from occystrap.errors import AuthError

PREFIX = "docker-credential-"
TOKEN_USERNAME = "<token>"
NOT_FOUND = "credentials not found"
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "docker.io", "index.docker.io"})
# A helper may unlock a keyring or ask gpg-agent; a minute is generous, and a hung helper
# must not hang the copy.
HELPER_TIMEOUT = 60.0
MAX_ANSWER = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, repr=False)
class HelperAnswer:
    """What a helper gave for one server. The repr hides the secret."""

    username: str | None
    secret: str | None
    identity_token: bool

    def __repr__(self) -> str:
        return f"HelperAnswer(username={self.username!r}, secret=<hidden>)"


def server_url(host: str) -> str:
    """The key docker stores a registry's credentials under: Docker Hub's legacy index URL,
    else the host as given to `docker login` (`host[:port]`)."""
    return DOCKER_HUB_SERVER if host.lower() in DOCKER_HUB_HOSTS else host


def parse_answer(stdout: bytes) -> HelperAnswer | None:
    """Parse a helper's `get` answer; None when it holds no credentials.

    Raises ValueError when it is not the protocol's JSON object (the caller words the error
    without the helper's output).
    """
    doc = json.loads(stdout)
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    username = doc.get("Username")
    secret = doc.get("Secret")
    if not isinstance(username, str | None) or not isinstance(secret, str | None):
        raise ValueError("Username or Secret is not a string")
    if not username and not secret:
        return None
    if username == TOKEN_USERNAME:
        return HelperAnswer(username=None, secret=secret or None, identity_token=True)
    return HelperAnswer(username=username or None, secret=secret or None, identity_token=False)


def _run(
    executable: str, url: str, env: Mapping[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """`executable get` with `url` on stdin, in a session of its own: on a timeout the whole
    process group is killed (a helper's own children, gpg or a keyring prompt, would
    otherwise outlive it and keep its output pipe open)."""
    with subprocess.Popen(
        [executable, "get"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=dict(env) if env is not None else None,
    ) as proc:
        try:
            out, err = proc.communicate(url.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess([executable, "get"], proc.returncode, out, err)


def run_helper(
    name: str,
    host: str,
    origin: str,
    env: Mapping[str, str] | None = None,
    timeout: float = HELPER_TIMEOUT,
) -> HelperAnswer | None:
    """Ask `docker-credential-<name>` for `host`'s credentials; None when it has none.

    `origin` says where the helper was named (e.g. `credsStore in ~/.docker/config.json`),
    for the error line. Raises AuthError, one line naming helper and registry, when the
    helper is missing, fails, hangs or answers nonsense.
    """
    program = PREFIX + name
    where = f"credential helper {program} ({origin}) for registry {host}"
    if not _NAME_RE.match(name):
        raise AuthError(f"{where}: not a helper name; fix the config file")
    path_var = (env or os.environ).get("PATH", os.defpath)
    executable = shutil.which(program, path=path_var)
    if executable is None:
        raise AuthError(
            f"{where} is not installed (not on PATH); install it, log in "
            "again without it, or pass --no-credential-helpers"
        )
    url = server_url(host)
    try:
        done = _run(executable, url, env, timeout)
    except subprocess.TimeoutExpired:
        raise AuthError(f"{where} did not answer within {timeout:.0f} s") from None
    except OSError as exc:
        raise AuthError(f"{where} could not be run: {exc.strerror}") from None
    if done.returncode != 0:
        if NOT_FOUND in done.stdout.decode(errors="replace").lower():
            return None
        raise AuthError(
            f"{where} failed (exit status {done.returncode}); its output is not "
            f"shown as it may hold a secret: run `printf %s {url} | {program} get` "
            "to see it"
        )
    try:
        return parse_answer(done.stdout[:MAX_ANSWER])
    except (ValueError, UnicodeDecodeError):
        raise AuthError(f"{where} answered something that is not credentials JSON") from None
