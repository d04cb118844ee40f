"""`dir://PATH?expand=true`: the image's merged root filesystem, layer over layer.

Whiteouts are applied as the OCI layer spec says: `.wh.NAME` removes NAME from the layers
below (a missing NAME is not an error); `DIR/.wh..wh..opq` empties DIR (its own contents only:
`usr/lib/.wh..wh..opq` leaves `usr/lib64` alone).

Nothing is ever written outside the target, whatever the archive says and whatever Python's
tarfile would allow: member names are normalised and refused when absolute or climbing out;
paths are resolved component by component as if the target were the root (`chroot` rules:
a symlink inside the image, even an absolute one, points inside the image), so a symlink
planted by one layer cannot redirect a later write to the host. Device nodes and FIFOs are
skipped (they need privileges and are not files).

Modes are made safe the way `tar --no-same-permissions` and tarfile's `data` filter make
them: setuid, setgid and sticky bits and group/other write bits are dropped, so a layer's
4755 copy of a system binary does not become a working setuid-root file in a tree anyone
can read. `preserve_modes=True` (`?preserve_modes=true`, documented as dangerous) keeps
`mode & 0o7777`. Owners are not restored (files belong to the user running occystrap) and
extended attributes are not written.
"""

from __future__ import annotations

import os
import posixpath
import shutil

from occystrap.errors import ManifestError
from occystrap.layers.tarread import members, open_stream
from occystrap.sources.tarball import safe_name

MAX_LINKS = 40
CHUNK = 1 << 20
UNSAFE_BITS = 0o7022  # setuid, setgid, sticky; group and other write


def safe_mode(mode: int, preserve: bool = False) -> int:
    """The permission bits to give an expanded file: `mode` without UNSAFE_BITS, unless
    `preserve`."""
    return mode & 0o7777 if preserve else mode & 0o7777 & ~UNSAFE_BITS


def secure_join(root: str, rel: str) -> str:
    """`root/rel` with every symlink on the way resolved inside `root`."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    current = root
    seen = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = os.path.dirname(current) if current != root else root
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            seen += 1
            if seen > MAX_LINKS:
                raise ManifestError(f"too many symlinks resolving {rel!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current = candidate
    if current != root and not current.startswith(root + os.sep):
        raise ManifestError(f"{rel!r} resolves outside the image")
    return current


def _clear(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        for entry in os.listdir(path):
            _remove(os.path.join(path, entry))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def apply_layer(root: str, layer_tar: str, where: str, preserve_modes: bool = False) -> None:
    """Unpack one uncompressed layer over `root` (modes as `safe_mode` says; a 0-byte file
    is an empty layer; a bad header mid-layer is an error, not a quiet end)."""
    root = os.path.realpath(root)
    with open(layer_tar, "rb") as f, open_stream(f) as archive:
        for member in members(archive):
            name = safe_name(member.name, where)
            parent_rel, base = posixpath.split(name)
            parent = secure_join(root, parent_rel)
            if base == ".wh..wh..opq":
                _clear(parent)
                continue
            if base.startswith(".wh."):
                _remove(os.path.join(parent, base[len(".wh.") :]))
                continue
            target = os.path.join(parent, base)
            if member.isdir():
                if os.path.lexists(target) and (
                    os.path.islink(target) or not os.path.isdir(target)
                ):
                    _remove(target)
                os.makedirs(target, exist_ok=True)
                os.chmod(target, safe_mode(member.mode, preserve_modes) | 0o700)
            elif member.isfile():
                os.makedirs(parent, exist_ok=True)
                _remove(target)
                source = archive.extractfile(member)
                assert source is not None
                with open(target, "wb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                os.chmod(target, safe_mode(member.mode, preserve_modes))
            elif member.issym():
                os.makedirs(parent, exist_ok=True)
                _remove(target)
                os.symlink(member.linkname, target)
            elif member.islnk():
                source_path = secure_join(root, safe_name(member.linkname, where))
                if not os.path.isfile(source_path) or os.path.islink(source_path):
                    raise ManifestError(
                        f"{where}: hard link {name} -> {member.linkname} names no file of the image"
                    )
                os.makedirs(parent, exist_ok=True)
                _remove(target)
                os.link(source_path, target)
            # devices, FIFOs: skipped


def expand(root: str, layer_tars: list[str], where: str, preserve_modes: bool = False) -> None:
    os.makedirs(root, exist_ok=True)
    for path in layer_tars:
        apply_layer(root, path, where, preserve_modes)
