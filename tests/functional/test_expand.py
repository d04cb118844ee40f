"""dir://PATH?expand=true: the merged root filesystem, whiteouts applied, never a write
outside the target."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from occystrap.errors import ManifestError
from occystrap.formats.expand import apply_layer, secure_join


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


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1
          ) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = size if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def test_opaque_whiteout_touches_only_its_directory(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    apply_layer(str(root), layer(tmp_path, "l0", entry("usr/lib", tarfile.DIRTYPE),
                                 entry("usr/lib/a"), entry("usr/lib64", tarfile.DIRTYPE),
                                 entry("usr/lib64/b")), "test")
    apply_layer(str(root), layer(tmp_path, "l1", entry("usr/lib/.wh..wh..opq"),
                                 entry("usr/.wh.missing")), "test")  # a missing path is fine
    assert os.listdir(root / "usr" / "lib") == []
    assert os.listdir(root / "usr" / "lib64") == ["b"]


def test_symlink_planted_by_one_layer_cannot_redirect_a_later_write(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    apply_layer(str(root), layer(tmp_path, "l0", entry("etc", tarfile.SYMTYPE, str(outside))),
                "test")
    apply_layer(str(root), layer(tmp_path, "l1", entry("etc/passwd")), "test")
    assert os.listdir(outside) == []  # the absolute link resolved inside the image
    assert (root / str(outside).lstrip("/") / "passwd").is_file()


@pytest.mark.parametrize("evil", [
    entry("../escape"),
    entry("/abs/path"),
    entry("a/../../escape"),
    entry("hard", tarfile.LNKTYPE, "../../etc/passwd"),
])
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
