"""What every destination writer provides to the write stage.

Writers receive layers in completion order, not manifest order: none of the formats needs
them in order (tar members and blob files can come in any order; the manifests that give
the order are written last). That is what keeps a sequential writer from deadlocking against
fetch: it never waits for a particular layer.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import msgspec

from occystrap.errors import DestinationError
from occystrap.mediatypes import OCI_CONFIG
from occystrap.messages import ImagePlan, LayerDesc
from occystrap.transform import to_oci

if TYPE_CHECKING:
    from occystrap.formats.dockerarchive import TarPlanner


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


def write_atomic(path: str, data: bytes, token: str) -> None:
    """Write `data` to a temp name beside `path`, fsync, then rename over it."""
    tmp = f"{path}.occystrap-{token}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def adopt(spool_file: str, target: str) -> bool:
    """Move a finished spool file to `target`, unless an identical blob (same digest, same
    name) is already there; then the spool file goes. True when this call put it there."""
    if os.path.exists(target):
        os.unlink(spool_file)
        return False
    os.makedirs(os.path.dirname(target), exist_ok=True)
    move_file(spool_file, target)
    return True


def remove_paths(paths: Iterable[str]) -> None:
    """Remove files and directory trees, ignoring those already gone."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            unlink_quietly(path)


@contextmanager
def locked(root: str) -> Iterator[int]:
    """An exclusive flock on the directory `root`, the lock every run writing to it takes
    before changing what other runs see (index.json, catalog.json, shared blobs). Not
    re-entrant: a second `locked(root)` in the same process waits forever."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def update_json_locked(root: str, name: str, default: Callable[[], Any],
                       change: Callable[[Any], None], token: str) -> None:
    """Read-modify-write `root/name` under an exclusive flock on `root`, replacing the file
    atomically, so concurrent runs adding to one directory do not lose each other's entries."""
    with locked(root):
        path = os.path.join(root, name)
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            doc = default()
        except ValueError as exc:
            raise DestinationError(f"{path} is not valid JSON: {exc}") from None
        change(doc)
        write_atomic(path, json.dumps(doc, indent=2, sort_keys=True).encode(), token)


def move_file(src: str, dst: str) -> None:
    """Rename `src` to `dst`; copy then delete when they are on different filesystems."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst + ".partial"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        os.unlink(src)


class Writer(ABC):
    #: layers must arrive uncompressed (the compress stage decompresses them)
    needs_uncompressed = False
    #: `?media_types=oci`: Docker manifests and lists are stored in their OCI forms
    oci_media_types = False

    def convert(self, plan: ImagePlan) -> ImagePlan:
        """The plan as this destination stores it. With `?media_types=oci` a Docker
        manifest or manifest list becomes its OCI form (new bytes and digest; config and
        layers unchanged), as skopeo's `oci:` transport does; otherwise it is unchanged."""
        if not self.oci_media_types:
            return plan
        try:
            body, media_type, digest = to_oci(plan.manifest, plan.manifest_media_type)
        except (ValueError, KeyError, TypeError) as exc:
            raise DestinationError(f"{plan.source}: cannot convert the manifest to OCI media "
                                   f"types: {exc}") from None
        if digest == plan.manifest_digest:
            return plan
        return msgspec.structs.replace(
            plan, manifest=body, manifest_media_type=media_type, manifest_digest=digest,
            config_media_type=OCI_CONFIG if plan.config else plan.config_media_type)

    def planner(self) -> TarPlanner | None:
        """A layout planner when blobs are written in place (tar://), for resolve."""
        return None

    @abstractmethod
    def begin_image(self, plan: ImagePlan) -> None: ...

    @abstractmethod
    def add_config(self, plan: ImagePlan) -> None:
        """Store the image config (`plan.config`): right after begin_image, or, when filters
        rewrite the config, just before finish_image. Nothing for an index."""

    @abstractmethod
    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        """Take ownership of `layer.path` (move it in, or copy and delete it)."""

    def place(self, plan: ImagePlan) -> str | None:
        """Where the image's blobs are published, as the layer cache records it
        (`HOST/REPOSITORY`), or None for destinations other images cannot mount from."""
        return None

    def stage_image(self, plan: ImagePlan) -> None:
        """Make the manifest present by digest, without naming it, so that what refers to
        it (`--referrers`) can follow before `finish_image` names it. Nothing to do for
        formats whose referrers are never written (tar, dir, docker)."""
        return None

    @abstractmethod
    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        """All layers are in (`layers`: their digests in manifest order): make the image
        visible, last of all its files. Returns where it went."""

    def detail(self, plan: ImagePlan) -> str:
        """A few words on how the image went, for the summary line (e.g. blobs mounted)."""
        return ""

    def failed_early(self) -> list[tuple[ImagePlan, BaseException]]:
        """Work this writer runs in the background (a registry's uploads) that has failed
        since the last call: the write stage fails those images at once, rather than when
        their last layer arrives, so fetch stops downloading for them. Writers that work
        in the write stage's own thread raise at once instead."""
        return []

    @abstractmethod
    def fail_image(self, plan: ImagePlan) -> None:
        """Undo what this image added that nothing else uses."""

    @abstractmethod
    def close(self, ok: bool) -> None:
        """End of run: publish (ok) or remove every temp file (not ok)."""
