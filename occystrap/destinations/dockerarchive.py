"""`tar://`: a tarball that `docker load`, `podman load` and skopeo accept.

The default is the shape Docker ≥25 `docker save` writes: an OCI image layout (`oci-layout`,
`index.json`, `blobs/sha256/…` holding the blobs exactly as fetched, so every digest is kept)
plus the legacy `manifest.json` and `repositories`, written last. `?format=v1.2` writes the
older layout instead: `<config-hex>.json` and uncompressed `<layer-hex>/layer.tar`.

Default shape, written in place: every blob's size is known from the manifest, and a tar
header depends only on name and size, so resolve plans the whole archive up front
(`TarPlanner`) and fetch downloads each blob straight into its region of the temp file. No
byte is written twice; the writer only fills in headers and appends the metadata at the end.
An image that fails leaves its regions behind under `blobs/unused/…` names that nothing
references, which keeps the archive valid.

Legacy shape, or layers re-encoded with --compression or filters: sizes are only known once
the layer is written, so layers are spooled and appended with sendfile, in manifest order
(a layer that finishes early waits in its spool file), so one image gives the same archive
bytes however its downloads interleave.

Either way the archive is written to a temp name beside the destination and renamed into
place only when complete. `docker://` writes the same stream into a Docker engine's load
request instead (`destinations/docker.py`); the planning is `destinations/tarplan.py`.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from occystrap.destinations.base import Writer
from occystrap.destinations.tarplan import TarPlanner
from occystrap.errors import DestinationError
from occystrap.files import unlink_quietly
from occystrap.layers.tarwrite import TarStream, header, padding
from occystrap.messages import ImagePlan, LayerDesc, Region
from occystrap.oci import (
    IMAGE_NAME,
    INDEX_FILE,
    LAYOUT_FILE,
    OCI_LAYOUT,
    REF_NAME,
    blob_rel,
    empty_index,
    index_entry,
)
from occystrap.reference import hex_of, normalized_name

UNUSED_PREFIX = "blobs/unused/"  # same length as "blobs/sha256/": same header size


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_target(path: str) -> None:
    """A tarball goes to a temp name and is renamed over `path` when whole, which would
    replace whatever is there: only a regular file (or nothing) may be. DestinationError
    naming what it is otherwise (`tar:///dev/stdout` is a symlink to a descriptor)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # nothing there, or an unreachable path: opening the temp file will say
    for test, kind in _KINDS:
        if test(mode):
            raise DestinationError(
                f"cannot write tarball {path}: it is {kind}, not a regular file (the "
                "tarball is written to a temp name and renamed over it); give a file path, "
                "or docker:// to load into an engine"
            )


def temp_name(path: str, token: str) -> str:
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}.occystrap-{token}.tmp")


class DockerArchiveWriter(Writer):
    takes_many = True
    image_only = "tar:// (an archive for docker load)"

    def __init__(
        self,
        path: str,
        legacy: bool,
        token: str,
        in_place: bool = True,
        stream: Any = None,
        repo_tag: str | None = None,
        oci_media_types: bool = False,
    ) -> None:
        """`stream`: write to this file-like object instead of a file (sequential, so never
        in place; `destinations.docker.EngineWriter` passes a Docker engine's load
        request). `repo_tag`: name every image so (docker://NAME:TAG). `legacy`:
        `?format=v1.2`, uncompressed layers. `oci_media_types`: ?media_types=oci (converted
        manifests are appended at the end). DestinationError when the file cannot be
        made."""
        self.path = path
        self.oci_media_types = oci_media_types
        self.legacy = legacy
        self.stream = stream
        self.repo_tag = repo_tag
        self.in_place = in_place and not legacy and stream is None
        self.needs_uncompressed = legacy
        self.tmp = temp_name(path, token)
        self._file: Any = stream
        self._fd = -1
        if stream is None:
            check_target(path)
            try:
                self._file = open(self.tmp, "wb", buffering=0)  # noqa: SIM115 - see close()
            except OSError as exc:
                raise DestinationError(f"cannot write tarball {path}: {exc.strerror}") from None
            self._fd = self._file.fileno()
        self._tar = TarStream(self._file)
        self._members: set[str] = set()  # spooled: names already appended
        # spooled: layers that arrived before an earlier layer of their image, held (as the
        # spool files they already are) so members go in manifest order and the same image
        # gives the same bytes whatever order its downloads finish in
        self._waiting: dict[int, dict[int, LayerDesc]] = {}
        self._next: dict[int, int] = {}
        self._end = 0  # in place: the end of every region planned so far
        self._users: dict[int, set[int]] = {}  # in place: region offset → images using it
        self._images: list[tuple[ImagePlan, list[str]]] = []
        self._appended: list[tuple[str, bytes]] = []  # in place: converted manifests
        self._broken: OSError | None = None  # a failed write leaves the archive unusable

    def planner(self) -> TarPlanner | None:
        return TarPlanner(self.tmp) if self.in_place else None

    # -- names -----------------------------------------------------------------------------

    def _layer_name(self, digest: str) -> str:
        return f"{hex_of(digest)}/layer.tar" if self.legacy else blob_rel(digest)

    def _config_name(self, plan: ImagePlan) -> str:
        return f"{hex_of(plan.config_digest)}.json" if self.legacy else blob_rel(plan.config_digest)

    # -- low-level writes, each of which marks the archive broken on failure ----------------

    def _guard(self) -> None:
        if self._broken is not None:
            raise DestinationError(
                f"cannot write tarball {self.path}: an earlier write failed "
                f"({self._broken.strerror})"
            )

    def _pwrite(self, data: bytes, offset: int) -> None:
        self._guard()
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(self._fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:
            self._broken = exc
            raise

    def _fill(self, region: Region, data: bytes | None = None, name: str | None = None) -> None:
        """Write a planned region's header (and its data, for small blobs held in memory)."""
        head = header(name or region.name, region.size)
        if data is None:
            self._pwrite(head, region.offset - len(head))
        else:
            self._pwrite(head + data + b"\0" * padding(len(data)), region.offset - len(head))

    def _append_bytes(self, name: str, data: bytes) -> None:
        self._guard()
        if name not in self._members:
            try:
                self._tar.add_bytes(name, data)
            except OSError as exc:
                self._broken = exc
                raise
            self._members.add(name)

    # -- the Writer protocol -----------------------------------------------------------------

    def begin_image(self, plan: ImagePlan) -> None:
        if not self.in_place:
            return
        self._end = max(self._end, plan.tar_end)
        for region in plan.regions:
            self._users.setdefault(region.offset, set()).add(plan.image_id)

    def add_config(self, plan: ImagePlan) -> None:
        if not plan.config:
            return
        if self.in_place:
            self._fill(plan.regions[0], plan.config)
        else:
            self._append_bytes(self._config_name(plan), plan.config)

    def add_layer(self, plan: ImagePlan, layer: LayerDesc) -> None:
        if self.in_place:
            self._fill(plan.regions[1 + layer.index])
            return
        self._guard()
        waiting = self._waiting.setdefault(plan.image_id, {})
        waiting[layer.index] = layer
        index = self._next.get(plan.image_id, 0)
        while index in waiting:
            self._append_layer(waiting.pop(index))
            index += 1
        self._next[plan.image_id] = index

    def _append_layer(self, layer: LayerDesc) -> None:
        name = self._layer_name(layer.digest)
        if name not in self._members:
            try:
                self._tar.add_file(name, layer.path)
            except OSError as exc:
                self._broken = exc
                raise
            self._members.add(name)
        os.unlink(layer.path)

    def finish_image(self, plan: ImagePlan, layers: list[str]) -> str:
        region = plan.regions[-1] if self.in_place else None
        if region is not None and region.name == blob_rel(plan.manifest_digest):
            self._fill(region, plan.manifest)
        elif region is not None:
            # ?media_types=oci: resolve planned the source's manifest; the converted one (a
            # few KiB) goes after the last region, with the metadata, and the planned region
            # becomes an unused member, so the layers still land in place.
            self._fill(region, name=UNUSED_PREFIX + region.name.rsplit("/", 1)[1])
            self._appended.append((blob_rel(plan.manifest_digest), plan.manifest))
        elif not self.legacy:
            self._append_bytes(blob_rel(plan.manifest_digest), plan.manifest)
        self._next.pop(plan.image_id, None)
        self._waiting.pop(plan.image_id, None)  # empty: every layer is in
        self._images.append((plan, list(layers)))
        return f"tar://{self.path}"

    def fail_image(self, plan: ImagePlan) -> None:
        self._next.pop(plan.image_id, None)
        for layer in self._waiting.pop(plan.image_id, {}).values():
            unlink_quietly(layer.path)
        # Legacy: bytes already streamed stay as unreferenced members. In place: every
        # region only this image used is renamed to an unused name, whatever its bytes are.
        for region in plan.regions:
            users = self._users.get(region.offset, set())
            users.discard(plan.image_id)
            if not users:
                self._fill(region, name=UNUSED_PREFIX + region.name.rsplit("/", 1)[1])

    def _metadata(self) -> None:
        manifest_json = []
        repositories: dict[str, dict[str, str]] = {}
        index_entries = []
        for plan, layers in self._images:
            name = self.repo_tag or plan.repo_tag
            tags = [name] if name else []
            manifest_json.append(
                {
                    "Config": self._config_name(plan),
                    "RepoTags": tags,
                    "Layers": [self._layer_name(d) for d in layers],
                }
            )
            if name and layers:
                repo, _, tag = name.rpartition(":")
                repositories.setdefault(repo, {})[tag] = hex_of(layers[-1])
            annotations = {}
            if name:  # RepoTags keep docker's short form; containerd wants the full one
                annotations[IMAGE_NAME] = normalized_name(name)
            if plan.tag:
                annotations[REF_NAME] = plan.tag
            index_entries.append(
                index_entry(
                    plan.manifest_media_type, plan.manifest_digest, len(plan.manifest), annotations
                )
            )
        if not self.legacy:
            self._append_bytes(LAYOUT_FILE, OCI_LAYOUT)
            index = empty_index()
            index["manifests"] = index_entries
            self._append_bytes(INDEX_FILE, json.dumps(index).encode())
        if repositories:
            self._append_bytes("repositories", json.dumps(repositories).encode())
        self._append_bytes("manifest.json", json.dumps(manifest_json).encode())

    def close(self, ok: bool) -> None:
        try:
            self._guard()
            if ok and self._images:
                if self.in_place:
                    self._file.seek(self._end)
                    self._tar = TarStream(self._file, start=self._end)
                    for name, data in self._appended:
                        self._append_bytes(name, data)
                self._metadata()
                self._tar.close()
                self._file.truncate()
                os.fsync(self._fd)
                self._file.close()
                os.replace(self.tmp, self.path)
                return
        except OSError as exc:
            self._discard()
            raise DestinationError(f"cannot write tarball {self.path}: {exc.strerror}") from None
        except DestinationError:
            self._discard()
            raise
        self._discard()

    def _discard(self) -> None:
        self._file.close()
        unlink_quietly(self.tmp)
