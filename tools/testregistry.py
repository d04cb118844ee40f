"""A real CNCF distribution registry on 127.0.0.1, for tests, demos and benchmarks.

We test against the real thing rather than a mock because the interesting bugs live in the
protocol details (upload sessions, Location headers, digest checks, content types) that a mock
would only echo back from our own assumptions. Debian's ``docker-registry`` package
(distribution 2.8) is small, starts in well under a second and needs no container runtime.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import httpx

REGISTRY_BINARY = "/usr/bin/docker-registry"
START_TIMEOUT = 20.0


def free_port() -> int:
    """Ask the kernel for a free loopback port.

    There is a small race between closing this socket and the registry binding it; a retry in
    :meth:`TestRegistry.start` covers the rare collision (e.g. between pytest-xdist workers).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_yaml(
    data_dir: Path,
    port: int,
    htpasswd: str | None,
    tls: tuple[Path, Path] | None = None,
    token: dict[str, str] | None = None,
) -> str:
    # Written by hand rather than with a YAML library so the test rig needs no extra dependency.
    lines = [
        "version: 0.1",
        "log:",
        "  level: error",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {data_dir}",
        "  delete:",
        "    enabled: true",
        "  cache:",
        "    blobdescriptor: inmemory",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: occystrap-test-secret",
    ]
    if tls:
        lines += [
            "  tls:",
            f"    certificate: {tls[0]}",
            f"    key: {tls[1]}",
        ]
    lines += [
        # Foreign layers (Windows-style bases served by their publisher) name URLs; this
        # registry accepts only the closed loopback port the test images use.
        "validation:",
        "  manifests:",
        "    urls:",
        "      allow:",
        "        - ^http://127\\.0\\.0\\.1:9/",
        "health:",
        "  storagedriver:",
        "    enabled: false",
    ]
    if htpasswd:
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: test",
            f"    path: {htpasswd}",
        ]
    elif token:
        lines += ["auth:", "  token:"] + [f"    {k}: {v}" for k, v in token.items()]
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the registry when its parent dies, so that a killed pytest worker
    or demo never leaves an orphan registry holding a port.

    The signal fires when the *thread* that started it exits: start registries from a
    long-lived thread (the main one), or pass ``die_with_parent=False``.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """Make a throwaway CA and a server certificate for 127.0.0.1 and localhost.

    A CA plus a leaf, not one self-signed leaf, because that is what a private registry looks
    like and what ``--ca-file`` is for; a leaf marked CA:FALSE also keeps strict verifiers
    (Python 3.13+, Go) happy. EC keys keep generation to a few milliseconds.
    Returns (ca.pem, server.pem, server.key).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is missing: install Debian's openssl package for TLS tests")
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, pem = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [
            openssl,
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_pem),
            "-days",
            "7",
            "-subj",
            "/CN=occystrap test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        [openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1"],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_pem),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(pem),
            "-days",
            "7",
            "-extfile",
            str(ext),
        ],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {cmd[1]} failed: {done.stderr.strip()[-500:]}")
    return ca_pem, pem, key


def write_htpasswd(path: str | os.PathLike[str], users: dict[str, str]) -> None:
    """Write a bcrypt htpasswd file, the only kind distribution accepts.

    Uses libc's crypt (Python 3.11's ``crypt`` module) at the lowest bcrypt cost, so auth tests
    need neither apache2-utils nor a bcrypt wheel and the registry checks passwords quickly.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    lines = []
    for user, password in users.items():
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
        if not hashed or not hashed.startswith("$2"):
            raise RuntimeError("this libc's crypt() cannot make bcrypt hashes")
        lines.append(f"{user}:{hashed}\n")
    Path(path).write_text("".join(lines))


class TestRegistry:
    """One ``docker-registry serve`` process with its own storage in a temporary directory.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`). ``htpasswd`` (a path)
    or ``users`` (name → password, written to a bcrypt htpasswd file) turn on Basic auth.
    ``tls=True`` serves HTTPS with a certificate from a throwaway CA (``ca_file``), so clients
    are tested with verification on, as users run them. ``token`` (realm, service, issuer,
    rootcertbundle) turns on distribution's Bearer token auth, trusting that token server.
    Everything it writes lives under ``self.dir`` and is removed by :meth:`stop` unless the
    caller supplied the directory, so a crashed test leaves nothing behind but a temp dir.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        port: int | None = None,
        *,
        htpasswd: str | None = None,
        users: dict[str, str] | None = None,
        directory: str | os.PathLike[str] | None = None,
        binary: str = REGISTRY_BINARY,
        die_with_parent: bool = True,
        tls: bool = False,
        token: dict[str, str] | None = None,
    ) -> None:
        self._requested_port = port
        self.token = dict(token) if token else None
        self.tls = tls
        self.ca_file: str | None = None
        self._tls_files: tuple[Path, Path] | None = None
        self.htpasswd = htpasswd
        self.users = dict(users or {})
        self.binary = binary
        self.die_with_parent = die_with_parent
        self._own_dir = directory is None
        self.dir = Path(directory) if directory is not None else None
        self.port: int = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the form used in ``registry://`` URIs."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS), the base URL for the HTTP API."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "registry.log"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the registry's log, for error messages that explain a failed start."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> TestRegistry:
        if not os.path.exists(self.binary):
            raise RuntimeError(
                f"{self.binary} is missing: run tools/setup.sh (installs Debian's docker-registry)"
            )
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="occystrap-registry-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.users:
            self.htpasswd = str(self.dir / "htpasswd")
            write_htpasswd(self.htpasswd, self.users)
        if self.tls and self._tls_files is None:
            ca, cert, key = write_tls_files(self.dir)
            self.ca_file, self._tls_files = str(ca), (cert, key)
        attempts = 1 if self._requested_port else 3
        last_error: Exception | None = None
        for _ in range(attempts):
            try:
                self._start_once(self._requested_port or free_port())
                return self
            except RuntimeError as exc:
                last_error = exc
                self._terminate()
        self._cleanup_dir()
        assert last_error is not None
        raise last_error

    def _start_once(self, port: int) -> None:
        assert self.dir is not None
        self.port = port
        config = self.dir / "config.yml"
        config.write_text(
            _config_yaml(self.dir / "data", port, self.htpasswd, self._tls_files, self.token)
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a Ctrl-C aimed at a demo's foreground job should reach us
                # first, so we stop the registry cleanly rather than racing it.
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        deadline = time.monotonic() + START_TIMEOUT
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        )
        with httpx.Client(timeout=2.0, trust_env=False, verify=verify) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"docker-registry exited with {self.proc.returncode} on {self.host}:\n"
                        + self.log_tail()
                    )
                try:
                    # 200 without auth, 401 with htpasswd: either way it is serving.
                    if client.get(f"{self.url}/v2/").status_code in (200, 401):
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(
            f"docker-registry did not answer on {self.url}/v2/ within {START_TIMEOUT:.0f}s:\n"
            + self.log_tail()
        )

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _cleanup_dir(self) -> None:
        if self._own_dir and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def stop(self) -> None:
        """Stop the registry and remove its storage (if we created it). Safe to call twice."""
        self._terminate()
        self._cleanup_dir()

    def __enter__(self) -> TestRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Keep a registry in the foreground for demos and benchmarks until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.testregistry", description="Run a loopback test registry."
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--dir", default=None, help="storage directory (kept on exit)")
    parser.add_argument("--htpasswd", default=None, help="enable Basic auth with this file")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (prints the CA file)")
    args = parser.parse_args(argv)

    stopping = False

    def _stop(signum: int, frame: types.FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with TestRegistry(
        args.port or None, htpasswd=args.htpasswd, directory=args.dir, tls=args.tls
    ) as reg:
        print(reg.url, flush=True)
        if reg.ca_file:
            print(f"CA file: {reg.ca_file}", flush=True)
        while not stopping:
            if reg.proc is None or reg.proc.poll() is not None:
                print("docker-registry exited:\n" + reg.log_tail(), file=sys.stderr)
                return 1
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
