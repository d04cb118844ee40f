"""Fixtures for the whole test suite: a real registry, sample images, and the CLI as users run it.

Tests run against a real CNCF distribution registry on 127.0.0.1 (no mocks, no internet): the
protocol details that break copiers are exactly the ones a mock would get wrong in our favour.
Each pytest-xdist worker gets its own registry, so tests never share mutable state across
processes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

from tools.imagebuilder import Sample, push_samples
from tools.testregistry import REGISTRY_BINARY, TestRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent
SKOPEO = "/usr/bin/skopeo"
TEST_USER = "tester"
TEST_PASSWORD = "s3cret-password"


def _require_registry_binary() -> None:
    if not os.path.exists(REGISTRY_BINARY):
        pytest.fail(
            f"{REGISTRY_BINARY} is missing: run `bash tools/setup.sh` (installs Debian's "
            "docker-registry and skopeo), or use `bash tools/test.sh`, which runs it for you",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def registry() -> Iterator[TestRegistry]:
    """A plain-HTTP registry without auth, one per xdist worker, for the whole session."""
    _require_registry_binary()
    with TestRegistry() as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[TestRegistry]:
    """A registry with Basic auth: user ``TEST_USER``, password ``TEST_PASSWORD``."""
    _require_registry_binary()
    with TestRegistry(users={TEST_USER: TEST_PASSWORD}) as reg:
        yield reg


@pytest.fixture(scope="session")
def tls_registry() -> Iterator[TestRegistry]:
    """A registry serving HTTPS with a certificate from a throwaway CA (``.ca_file``)."""
    _require_registry_binary()
    with TestRegistry(tls=True) as reg:
        yield reg


@pytest.fixture(scope="session")
def sample_images(
    registry: TestRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Sample]:
    """The sample set pushed into ``registry``; keys: docker, oci, zstd, index, manifest_list.

    Each :class:`tools.imagebuilder.Sample` has ``name``, ``tag``, ``host``, ``built`` (a
    BuiltImage or BuiltIndex with the exact bytes pushed and blob files on disk), ``digest``,
    ``media_type``, ``manifest``, ``ref`` (host/name:tag) and ``uri`` (registry://...).
    Session-scoped and read-only: a test that deletes or overwrites must push its own image.
    """
    return push_samples(registry.url, tmp_path_factory.mktemp("sample-images"))


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _cli_command() -> list[str]:
    """Prefer the installed console script (what users run); fall back to ``-m occystrap``."""
    script = Path(sys.executable).with_name("occystrap")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "occystrap"]


# Where a developer's own logins live (docker, podman, skopeo): never read by tests.
_CREDENTIAL_VARS = frozenset(
    {"DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"}
)


def _clean_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy")
        and not k.startswith("OCCYSTRAP_")
        and k not in _CREDENTIAL_VARS
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


OccystrapCli = Callable[..., CliResult]


@pytest.fixture
def occystrap_cli(tmp_path: Path) -> OccystrapCli:
    """Run occystrap in a subprocess: ``occystrap_cli("info", uri, timeout=60, env={...})``.

    A subprocess, not click's CliRunner, so that multiprocessing, signals, exit codes and
    stray output behave exactly as for a user. ``HOME``, ``XDG_RUNTIME_DIR`` and
    ``XDG_CONFIG_HOME`` point into an empty temp dir so a developer's docker and podman
    logins never leak into tests; ``OCCYSTRAP_*`` variables from the calling shell are
    dropped for the same reason.
    """

    def run(
        *args: str | os.PathLike[str],
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> CliResult:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        proc = subprocess.run(
            [*_cli_command(), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            cwd=cwd or tmp_path,
            env=_clean_env(
                {
                    "HOME": str(home),
                    "XDG_RUNTIME_DIR": str(home / "run"),
                    "XDG_CONFIG_HOME": str(home / ".config"),
                    **(env or {}),
                }
            ),
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def have_skopeo() -> bool:
    """Whether skopeo is there to check our outputs independently of our own readers."""
    return os.access(SKOPEO, os.X_OK)


@pytest.fixture
def skopeo(have_skopeo: bool) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run skopeo (skipping the test when it is missing): ``skopeo("inspect", "oci:DIR")``."""
    if not have_skopeo:
        pytest.skip("skopeo not installed (tools/setup.sh installs it)")

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SKOPEO, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(None),
        )

    return run


def sha256_file(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file, read in chunks; for asserting byte-exact outputs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Docker engine (Debian's docker.io) with its data root and socket in a temp dir;
    yields the socket path. No iptables, no bridge: it runs as root in a plain container.
    Storage: overlay2 where the kernel lets it mount here (a container costs milliseconds),
    else vfs (each container and build step copies the whole tree). Skips, saying why, where
    dockerd cannot start."""
    import shutil
    import time

    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.access(dockerd, os.X_OK):
        pytest.skip("dockerd not installed (tools/setup.sh installs docker.io)")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root here")
    root = tmp_path_factory.mktemp("dockerd")
    sock = root / "docker.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - closed below
    for driver in ("overlay2", "vfs"):  # dockerd exits at once on a driver it cannot use
        proc = subprocess.Popen(
            [
                dockerd,
                f"--storage-driver={driver}",
                "--iptables=false",
                "--bridge=none",
                "--data-root",
                str(root / "data"),
                "--exec-root",
                str(root / "exec"),
                "--pidfile",
                str(root / "docker.pid"),
                "-H",
                f"unix://{sock}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if sock.exists():
            break
        proc.kill()
        proc.wait()
        _unmount_below(root)
    else:
        log.close()
        tail = (root / "dockerd.log").read_text(errors="replace")[-500:]
        pytest.skip(f"dockerd could not start here: {tail}")
    try:
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    """Unmount what dockerd left mounted under `root`, deepest first: once it has run a
    container, its exec-root keeps a network namespace bind-mounted after it exits."""
    prefix = f"{root}/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


class Containerd(NamedTuple):
    socket: str
    ctr: str

    def run(
        self, *args: str, namespace: str = "occystrap-test", timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`ctr --address SOCKET --namespace NAMESPACE ARGS...`."""
        return subprocess.run(
            [self.ctr, "--address", self.socket, "--namespace", namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(None),
            check=False,
        )


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A real containerd (Debian's) with its root, state and socket in a temp dir, as the
    docker_engine fixture starts dockerd; the CRI plugin is off (no kubelet here). Skips,
    saying why, where it cannot start."""
    import shutil
    import time

    binary, ctr = shutil.which("containerd"), shutil.which("ctr")
    if binary is None or ctr is None:
        pytest.skip("containerd not installed (tools/setup.sh installs it)")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root here")
    root = tmp_path_factory.mktemp("containerd")
    sock = root / "containerd.sock"
    config = root / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{root / "root"}"\nstate = "{root / "state"}"\n'
        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    log = open(root / "containerd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([binary, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    daemon = Containerd(str(sock), ctr)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if sock.exists() and daemon.run("version", timeout=10).returncode == 0:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        log.close()
        tail = (root / "containerd.log").read_text(errors="replace")[-500:]
        pytest.skip(f"containerd could not start here: {tail}")
    try:
        yield daemon
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
