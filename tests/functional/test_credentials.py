"""Credentials where users already keep them, against real registries:

- docker's credential helpers, with the real `docker-credential-pass` (Debian's
  golang-docker-credential-helpers) over `pass` and a throw-away GnuPG key in a temp HOME;
- an identity token from a helper, against a real distribution registry with token auth
  (its token server is tests/tokenserver.py, a stand-in that follows the token specs);
- podman's and skopeo's auth files, written by the real `skopeo login`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SKOPEO, TEST_PASSWORD, TEST_USER, _clean_env
from tests.tokenserver import TokenServer
from tools.imagebuilder import BuiltImage, build_image, push_image
from tools.testregistry import TestRegistry

IDENTITY_TOKEN = "idtok-7f3c9a-never-print-me"


class PassStore:
    """A `pass` password store with its own GnuPG key, in a HOME of its own."""

    def __init__(self) -> None:
        # short: gpg-agent's socket path must fit a unix socket name
        self.home = Path(tempfile.mkdtemp(prefix="occ-pass-"))
        self.env = {"HOME": str(self.home), "PATH": os.environ.get("PATH", os.defpath)}
        gnupg = self.home / ".gnupg"
        gnupg.mkdir(mode=0o700)
        params = self.home / "key.params"
        params.write_text(
            "%no-protection\nKey-Type: EDDSA\nKey-Curve: ed25519\n"
            "Subkey-Type: ECDH\nSubkey-Curve: cv25519\n"
            "Name-Real: occystrap test\nName-Email: test@occystrap.invalid\n"
            "Expire-Date: 1d\n%commit\n"
        )
        self._run("gpg", "--batch", "--quiet", "--gen-key", str(params))
        listing = self._run("gpg", "--batch", "--list-secret-keys", "--with-colons").stdout
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        self._run("pass", "init", fingerprint)

    def _run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            args, input=stdin, capture_output=True, text=True, env=self.env, timeout=60, check=False
        )
        assert done.returncode == 0, f"{args[0]} failed: {done.stderr[-300:]}"
        return done

    def store(self, server: str, username: str, secret: str) -> None:
        """What `docker login` does with `"credsStore": "pass"`."""
        self._run(
            "docker-credential-pass",
            "store",
            stdin=json.dumps({"ServerURL": server, "Username": username, "Secret": secret}),
        )

    def entries(self) -> list[Path]:
        return sorted((self.home / ".password-store").rglob("*.gpg"))

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "all"], env=self.env, capture_output=True, check=False, timeout=30
        )
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def pass_store() -> Iterator[PassStore]:
    for tool in ("gpg", "gpgconf", "pass", "docker-credential-pass"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} is missing: tools/setup.sh installs pass and "
                "golang-docker-credential-helpers"
            )
    store = PassStore()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_image(
        tmp_path_factory.mktemp("creds-image"),
        seed=1900,
        layer_sizes=[30_000],
        special_entries=False,
    )


@pytest.fixture(scope="module")
def basic_image(auth_registry: TestRegistry, image: BuiltImage) -> str:
    push_image(auth_registry.url, "creds/app", "1", image, auth=(TEST_USER, TEST_PASSWORD))
    return f"registry://{auth_registry.host}/creds/app:1"


def _docker_config(tmp_path: Path, doc: dict[str, object]) -> dict[str, str]:
    """A docker config dir for one test; the env that points occystrap (and helpers) at it."""
    directory = tmp_path / "docker"
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    return {"DOCKER_CONFIG": str(directory)}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_creds_store_pass(occystrap_cli, auth_registry, basic_image, pass_store, tmp_path):
    host = auth_registry.host
    pass_store.store(host, TEST_USER, TEST_PASSWORD)
    env = {
        **pass_store.env,
        **_docker_config(tmp_path, {"auths": {host: {}}, "credsStore": "pass"}),
    }
    r = occystrap_cli("--insecure", "process", basic_image, f"oci://{tmp_path / 'out'}", env=env)
    assert r.returncode == 0, r.stderr
    assert TEST_PASSWORD not in r.stdout + r.stderr
    # opting out, by flag or variable: anonymous, so the registry's 401 is what the user sees
    for extra, flags in (
        ({}, ["--no-credential-helpers"]),
        ({"OCCYSTRAP_NO_CREDENTIAL_HELPERS": "1"}, []),
    ):
        r = occystrap_cli(
            "--insecure",
            *flags,
            "process",
            basic_image,
            f"oci://{tmp_path / 'anon'}",
            env={**env, **extra},
        )
        assert r.returncode == 1
        assert "requires credentials" in r.stderr and "Traceback" not in r.stderr


def test_cred_helpers_win_over_creds_store(
    occystrap_cli, auth_registry, basic_image, pass_store, tmp_path
):
    """credHelpers[host] first, as docker does: the store it names is never asked."""
    host = auth_registry.host
    pass_store.store(host, TEST_USER, TEST_PASSWORD)
    env = {
        **pass_store.env,
        **_docker_config(tmp_path, {"credsStore": "desktop", "credHelpers": {host: "pass"}}),
    }
    r = occystrap_cli("--insecure", "info", basic_image, env=env)
    assert r.returncode == 0, r.stderr


def test_missing_helper_is_one_line(
    occystrap_cli, auth_registry, basic_image, pass_store, tmp_path
):
    host = auth_registry.host
    env = {**pass_store.env, **_docker_config(tmp_path, {"credsStore": "desktop"})}
    r = occystrap_cli("--insecure", "process", basic_image, f"oci://{tmp_path / 'out'}", env=env)
    assert r.returncode == 1
    [line] = _error_lines(r.stderr)
    assert "docker-credential-desktop" in line and host in line and "credsStore" in line
    assert not (tmp_path / "out").exists()


def test_failing_helper_never_shows_its_output(
    occystrap_cli, auth_registry, basic_image, pass_store, tmp_path
):
    host = auth_registry.host
    pass_store.store(host, TEST_USER, TEST_PASSWORD)
    # The entry is there but cannot be decrypted: `pass show` fails, so the helper does.
    for entry in pass_store.entries():
        entry.write_bytes(b"not an OpenPGP message " + TEST_PASSWORD.encode())
    env = {**pass_store.env, **_docker_config(tmp_path, {"credHelpers": {host: "pass"}})}
    r = occystrap_cli("--insecure", "process", basic_image, f"oci://{tmp_path / 'out'}", env=env)
    assert r.returncode == 1
    [line] = _error_lines(r.stderr)
    assert "docker-credential-pass" in line and host in line and "exit status" in line
    assert TEST_PASSWORD not in r.stderr + r.stdout


def test_helper_runs_once_per_run(occystrap_cli, auth_registry, basic_image, pass_store, tmp_path):
    """Source and destination on one host, read and written by four stage processes: the
    helper is asked once, before the stages start."""
    host = auth_registry.host
    pass_store.store(host, TEST_USER, TEST_PASSWORD)
    bin_dir, log = tmp_path / "bin", tmp_path / "helper.log"
    bin_dir.mkdir()
    counting = bin_dir / "docker-credential-counting"
    counting.write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec docker-credential-pass "$@"\n')
    counting.chmod(0o755)
    env = {
        **pass_store.env,
        "PATH": f"{bin_dir}:{pass_store.env['PATH']}",
        **_docker_config(tmp_path, {"credsStore": "counting"}),
    }
    r = occystrap_cli(
        "--insecure", "process", basic_image, f"registry://{host}/creds/app-copy:1", env=env
    )
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == ["get"]


# -- identity tokens, with distribution's token auth ----------------------------------------


@pytest.fixture(scope="module")
def token_registry(
    image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestRegistry, TokenServer]]:
    directory = tmp_path_factory.mktemp("token-server")
    with (
        TokenServer(
            directory, users={TEST_USER: TEST_PASSWORD}, refresh_tokens={IDENTITY_TOKEN: TEST_USER}
        ) as server,
        TestRegistry(token=server.registry_config()) as registry,
    ):
        bearer = server.mint(TEST_USER, ["repository:creds/app:pull,push"])

        class _Bearer(httpx.Auth):
            def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
                request.headers["Authorization"] = f"Bearer {bearer}"
                yield request

        push_image(registry.url, "creds/app", "1", image, auth=_Bearer())  # type: ignore[arg-type]
        yield registry, server


def test_identity_token_from_a_helper(occystrap_cli, token_registry, pass_store, tmp_path):
    registry, server = token_registry
    # `docker login` against an OAuth2 registry stores this: the username <token>
    pass_store.store(registry.host, "<token>", IDENTITY_TOKEN)
    env = {**pass_store.env, **_docker_config(tmp_path, {"credsStore": "pass"})}
    before = len(server.grants)
    r = occystrap_cli(
        "--insecure",
        "process",
        f"registry://{registry.host}/creds/app:1",
        f"oci://{tmp_path / 'out'}",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert set(server.grants[before:]) == {"refresh_token"}
    assert IDENTITY_TOKEN not in r.stdout + r.stderr


def test_password_from_a_helper_against_token_auth(
    occystrap_cli, token_registry, pass_store, tmp_path
):
    registry, server = token_registry
    pass_store.store(registry.host, TEST_USER, TEST_PASSWORD)
    env = {**pass_store.env, **_docker_config(tmp_path, {"credHelpers": {registry.host: "pass"}})}
    before = len(server.grants)
    r = occystrap_cli("--insecure", "info", f"registry://{registry.host}/creds/app:1", env=env)
    assert r.returncode == 0, r.stderr
    assert set(server.grants[before:]) == {"basic"}


def test_identity_token_in_docker_config(occystrap_cli, token_registry, tmp_path):
    registry, server = token_registry
    env = _docker_config(tmp_path, {"auths": {registry.host: {"identitytoken": IDENTITY_TOKEN}}})
    before = len(server.grants)
    r = occystrap_cli("--insecure", "info", f"registry://{registry.host}/creds/app:1", env=env)
    assert r.returncode == 0, r.stderr
    assert set(server.grants[before:]) == {"refresh_token"}


def test_without_credentials_the_token_registry_refuses(occystrap_cli, token_registry):
    registry, _ = token_registry
    r = occystrap_cli("--insecure", "info", f"registry://{registry.host}/creds/app:1")
    assert r.returncode == 1 and "Traceback" not in r.stderr


# -- podman's and skopeo's auth files --------------------------------------------------------


def _skopeo_login(host: str, env: dict[str, str], *args: str) -> None:
    if not os.access(SKOPEO, os.X_OK):
        pytest.skip("skopeo not installed (tools/setup.sh installs it)")
    done = subprocess.run(
        [SKOPEO, "login", "--tls-verify=false", "-u", TEST_USER, "--password-stdin", *args, host],
        input=TEST_PASSWORD,
        capture_output=True,
        text=True,
        env=_clean_env(env),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_podman_auth_file_in_xdg_runtime_dir(occystrap_cli, auth_registry, basic_image, tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    _skopeo_login(auth_registry.host, {"XDG_RUNTIME_DIR": str(runtime)})
    assert (runtime / "containers" / "auth.json").exists()
    r = occystrap_cli("--insecure", "info", basic_image, env={"XDG_RUNTIME_DIR": str(runtime)})
    assert r.returncode == 0, r.stderr


def test_authfile_flag_and_registry_auth_file(occystrap_cli, auth_registry, basic_image, tmp_path):
    authfile = tmp_path / "auth.json"
    _skopeo_login(auth_registry.host, {}, "--authfile", str(authfile))
    r = occystrap_cli("--insecure", "--authfile", authfile, "info", basic_image)
    assert r.returncode == 0, r.stderr
    r = occystrap_cli("--insecure", "info", basic_image, env={"REGISTRY_AUTH_FILE": str(authfile)})
    assert r.returncode == 0, r.stderr
    # an explicit file is the only one read: docker's config is not consulted
    env = _docker_config(tmp_path, {"auths": {}})
    r = occystrap_cli(
        "--insecure",
        "--authfile",
        tmp_path / "docker" / "config.json",
        "info",
        basic_image,
        env=env,
    )
    assert r.returncode == 1 and "requires credentials" in r.stderr
    r = occystrap_cli("--insecure", "--authfile", tmp_path / "missing.json", "info", basic_image)
    assert r.returncode == 2 and "missing.json" in r.stderr
