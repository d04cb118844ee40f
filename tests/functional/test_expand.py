"""dir://PATH?expand=true: the merged root filesystem, whiteouts applied, never a write
outside the target."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from occystrap.errors import ManifestError
from occystrap.layers.expand import apply_layer, secure_join


def test_expanded_rootfs_applies_whiteouts(occystrap_cli, sample_images, tmp_path):
    s = sample_images["docker"]
    out = tmp_path / "out"
    r = occystrap_cli("--insecure", "process", s.uri, f"dir://{out}?expand=true")
    assert r.returncode == 0, r.stderr
    root = out / "manifest"
    assert (root / "usr" / "bin" / "busybox").is_file()
    assert os.readlink(root / "usr" / "bin" / "sh") == "busybox"
    assert os.path.samefile(root / "usr" / "bin" / "ls", root / "usr" / "bin" / "busybox")
    assert not (root / "etc" / "motd").exists()  # .wh.motd in layer 1
    assert sorted(os.listdir(root / "var" / "cache")) == ["new.txt"]  # opaque directory
    assert not any(n.startswith(".wh.") for _, _, files in os.walk(root) for n in files)
    assert not [n for n in os.listdir(out) if ".occystrap-" in n]


def layer(tmp_path, name: str, *members: tarfile.TarInfo) -> str:
    path = tmp_path / name
    with tarfile.open(path, "w") as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return str(path)


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = size if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def test_opaque_whiteout_touches_only_its_directory(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    apply_layer(
        str(root),
        layer(
            tmp_path,
            "l0",
            entry("usr/lib", tarfile.DIRTYPE),
            entry("usr/lib/a"),
            entry("usr/lib64", tarfile.DIRTYPE),
            entry("usr/lib64/b"),
        ),
        "test",
    )
    apply_layer(
        str(root),
        layer(tmp_path, "l1", entry("usr/lib/.wh..wh..opq"), entry("usr/.wh.missing")),
        "test",
    )  # a missing path is fine
    assert os.listdir(root / "usr" / "lib") == []
    assert os.listdir(root / "usr" / "lib64") == ["b"]


def test_symlink_planted_by_one_layer_cannot_redirect_a_later_write(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    apply_layer(
        str(root), layer(tmp_path, "l0", entry("etc", tarfile.SYMTYPE, str(outside))), "test"
    )
    apply_layer(str(root), layer(tmp_path, "l1", entry("etc/passwd")), "test")
    assert os.listdir(outside) == []  # the absolute link resolved inside the image
    assert (root / str(outside).lstrip("/") / "passwd").is_file()


@pytest.mark.parametrize(
    "evil",
    [
        entry("../escape"),
        entry("/abs/path"),
        entry("a/../../escape"),
        entry("hard", tarfile.LNKTYPE, "../../etc/passwd"),
    ],
)
def test_escaping_members_are_refused(tmp_path, evil):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ManifestError):
        apply_layer(str(root), layer(tmp_path, "evil", evil), "test")
    assert sorted(os.listdir(tmp_path)) == ["evil", "root"]


def test_secure_join_resolves_relative_links_inside(tmp_path):
    root = tmp_path / "root"
    (root / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    os.symlink("../../../../..", root / "up")
    assert secure_join(str(root), "lib/x") == str(root / "usr" / "lib" / "x")
    assert secure_join(str(root), "up/etc") == str(root / "etc")


# -- modes: no setuid root shells in an expanded tree ------------------------------------------


def test_unsafe_mode_bits_are_dropped_unless_asked(tmp_path):
    members = [
        entry("bin", tarfile.DIRTYPE),
        entry("bin/su"),
        entry("tmp", tarfile.DIRTYPE),
        entry("etc", tarfile.DIRTYPE),
        entry("etc/shared"),
    ]
    members[1].mode, members[2].mode, members[4].mode = 0o6755, 0o1777, 0o666
    path = layer(tmp_path, "l0", *members)
    for preserve, su, tmp, shared in ((False, 0o755, 0o755, 0o644), (True, 0o6755, 0o1777, 0o666)):
        root = tmp_path / f"root-{preserve}"
        root.mkdir()
        apply_layer(str(root), path, "test", preserve_modes=preserve)
        assert stat.S_IMODE(os.stat(root / "bin" / "su").st_mode) == su
        assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == tmp
        assert stat.S_IMODE(os.stat(root / "etc" / "shared").st_mode) == shared


def _as_nobody(program: Path) -> str | None:
    """`program -u` run as nobody: the effective uid it reports, or None where we cannot
    switch users here (not root, or no setpriv)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    r = subprocess.run(
        [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(program), "-u"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return r.stdout.strip() if r.returncode == 0 else f"failed: {r.stderr.strip()}"


def test_setuid_binary_in_a_layer_is_not_setuid_when_expanded(occystrap_cli, registry):
    """A layer holding a 4755 copy of `id`: expanded, it is 0755 and, run as nobody, says
    euid 65534; with ?preserve_modes=true it keeps 4755 (and, as root, runs as euid 0)."""
    from tests import hostilefiles as hf
    from tools.imagebuilder import push_image

    id_binary = Path(shutil.which("id") or "/usr/bin/id").read_bytes()
    plain = hf.tar_of(
        ("usr", 0o755, None),
        ("usr/bin", 0o755, None),
        ("usr/bin/id", 0o4755, id_binary),
        ("tmp", 0o1777, None),
    )
    # Outside pytest's 0700 temp root, so nobody can reach the expanded file.
    work = Path(tempfile.mkdtemp(prefix="occystrap-expand-"))
    try:
        os.chmod(work, 0o755)
        built = hf.image(work / "build", [(hf.gzipped(plain), hf.TAR_GZIP, plain)])
        push_image(registry.url, "hostile/setuid", "1.0", built)
        src = f"registry://{registry.host}/hostile/setuid:1.0"
        for query, mode, euid in (
            ("expand=true", 0o755, "65534"),
            ("expand=true&preserve_modes=true", 0o4755, "0"),
        ):
            out = work / query.replace("&", "-").replace("=", "_")
            r = occystrap_cli("--insecure", "process", src, f"dir://{out}?{query}")
            assert r.returncode == 0, r.stderr
            program = out / "manifest" / "usr" / "bin" / "id"
            assert stat.S_IMODE(os.stat(program).st_mode) == mode
            assert stat.S_IMODE(os.stat(out / "manifest" / "tmp").st_mode) & 0o7022 == (
                0o1022 if "preserve" in query else 0
            )
            seen = _as_nobody(program)
            assert seen in (None, euid), seen
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_preserve_modes_needs_expand(occystrap_cli, sample_images, tmp_path):
    r = occystrap_cli(
        "--insecure",
        "process",
        sample_images["docker"].uri,
        f"dir://{tmp_path / 'out'}?preserve_modes=true",
    )
    assert r.returncode == 2
    assert "?preserve_modes=true applies only with ?expand=true" in r.stderr
