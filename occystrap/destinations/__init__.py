"""Where images go: a registry, a Docker engine, or a tarball, OCI layout or directory on
disk. `Destination` turns a destination Location into what the stages need: what it can
hold (its writer's capabilities), a writer (`open_writer`), a spool directory on the same
filesystem, and a cheap "does it already have this?" probe for resolve (`probe`).

The writers mirror `sources/`: `oci.py`, `directory.py`, `dockerarchive.py` (tar://, with
`tarplan.py` planning it in place), `docker.py` (a Docker engine), `registry.py` (with
`referrerstags.py`). Their base class and the planner protocol are in `base.py`, which every
writer imports, so this module (which imports every writer) stays out of a cycle.
"""

from __future__ import annotations

import glob
import importlib
import os
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Literal

import msgspec

from occystrap.config import Config
from occystrap.destinations.base import Planner, Writer
from occystrap.destinations.shared import journal_path
from occystrap.errors import UsageError
from occystrap.files import remove_paths, unlink_quietly
from occystrap.mediatypes import ACCEPT
from occystrap.reference import ImageRef, Location

if TYPE_CHECKING:
    from occystrap.registry.client import RegistryClient
    from occystrap.registry.clients import ClientPool

__all__ = ["WRITERS", "Destination", "Planner", "Probe", "Writer", "writer_class"]

#: the writer of each destination scheme (module, class): imported when a run needs it, so
#: a run pays only for its own destination's modules (the supervisor imports it before
#: the stages fork, so they share it)
WRITERS: dict[str, tuple[str, str]] = {
    "dir": ("occystrap.destinations.directory", "DirectoryWriter"),
    "tar": ("occystrap.destinations.dockerarchive", "DockerArchiveWriter"),
    "oci": ("occystrap.destinations.oci", "OCILayoutWriter"),
    "registry": ("occystrap.destinations.registry", "RegistryWriter"),
    "docker": ("occystrap.destinations.docker", "EngineWriter"),
}


def writer_class(scheme: str) -> type[Writer]:
    """The Writer class of a destination scheme, imported on first use."""
    module, name = WRITERS[scheme]
    cls: type[Writer] = getattr(importlib.import_module(module), name)
    return cls


class Destination(msgspec.Struct, frozen=True):
    """A destination of this run (`token`: the run's random token, in every temp name).
    What it can hold is its writer class's capabilities, refined by the location's options
    where they change one (`?format=v1.2`, `?unique_names=true`)."""

    location: Location
    token: str

    @property
    def writer_class(self) -> type[Writer]:
        return writer_class(self.location.scheme)

    @property
    def is_registry(self) -> bool:
        return self.location.scheme == "registry"

    @property
    def is_local(self) -> bool:
        """Written to a path on this machine (else a registry or a Docker engine)."""
        return self.location.scheme in ("dir", "tar", "oci")

    @property
    def takes_many(self) -> bool:
        """Can hold several images of one source (a multi-image tarball, say); dir:// only
        with `?unique_names=true`."""
        if self.location.scheme == "dir":
            return bool(self.location.option("unique_names", False))
        return self.writer_class.takes_many

    @property
    def takes_index(self) -> bool:
        """Can hold a multi-platform index whole."""
        return self.writer_class.takes_index

    @property
    def image_semantics(self) -> str | None:
        """Why this destination can only hold container images (None: it holds any OCI
        content, byte-exact: registry://, oci://)."""
        return self.writer_class.image_only

    @property
    def path(self) -> str:
        assert self.location.path is not None
        return os.path.abspath(self.location.path)

    @property
    def legacy_tar(self) -> bool:
        fmt = str(self.location.option("format", "")).lower()
        return self.location.scheme == "tar" and fmt in ("v1.2", "1.2", "legacy")

    @property
    def oci_media_types(self) -> bool:
        """`?media_types=oci`: store Docker manifests and lists in their OCI forms (new
        digests), as skopeo's oci: does; the default, `keep`, keeps every byte."""
        value = str(self.location.option("media_types", "keep")).lower()
        if value not in ("keep", "oci"):
            raise UsageError(f"{self.location}: media_types={value}: expected oci or keep")
        if value == "oci" and (self.location.scheme not in ("oci", "tar") or self.legacy_tar):
            raise UsageError(
                f"{self.location}: media_types=oci applies to oci:// and tar:// "
                "(not to ?format=v1.2, which holds no manifests)"
            )
        return value == "oci"

    @property
    def needs_uncompressed(self) -> bool:
        """Layers must reach the writer uncompressed (dir://, tar://?format=v1.2)."""
        return self.writer_class.needs_uncompressed or self.legacy_tar

    @property
    def temp_prefix(self) -> str:
        """Every temp file of this run beside the destination starts with this."""
        head, tail = os.path.split(self.path)
        return os.path.join(head, f".{tail}.occystrap-{self.token}")

    def spool_dir(self, temp_dir: str | None) -> str:
        if not self.is_local and not temp_dir:
            temp_dir = tempfile.gettempdir()
        if temp_dir:
            return os.path.join(os.path.abspath(temp_dir), f"occystrap-spool-{self.token}")
        return self.temp_prefix + ".spool"

    def target(self, ref: ImageRef, bulk: bool) -> ImageRef | None:
        """Where a registry destination puts the image `ref`: the destination itself, or
        for a bulk copy `PREFIX/NAME:TAG` below it (each image keeps its name and tag)."""
        dest = self.location.ref
        if dest is None:
            return None
        if bulk:
            return ImageRef(dest.host, f"{dest.name}/{ref.name}", tag=ref.tag)
        return ImageRef(dest.host, dest.name, tag=dest.tag or ref.tag)

    def probe(self, config: Config) -> Probe:
        """What resolve asks this destination (made in the resolve process)."""
        return Probe(self, config)

    def has_layer(self, digest: str, size: int) -> bool:
        """For local destinations; a registry is asked through a Probe. A layer found in a
        shared directory (oci://, dir://) is noted in this run's journal, so another run's
        clean-up does not remove it before this run publishes (see destinations/shared.py)."""
        scheme = self.location.scheme
        if scheme == "oci":
            from occystrap.destinations.oci import OCILayoutWriter

            return OCILayoutWriter.has_blob(self.path, digest, size, self.token)
        if scheme == "dir":
            from occystrap.destinations.directory import DirectoryWriter

            return DirectoryWriter.has_layer(self.path, digest, self.token)
        return False

    def open_writer(self, config: Config, spool: str) -> Writer:
        """The writer, made in the write process (`spool`: the run's spool directory).
        UsageError for options that do not fit; DestinationError when the output cannot be
        made."""
        scheme = self.location.scheme
        convert = self.oci_media_types
        # Each writer's module is imported here, for the one scheme this run writes to.
        if scheme == "docker":
            from occystrap.destinations.docker import EngineWriter
            from occystrap.engine import Engine, docker_socket

            name = self.location.path or None
            if name and ":" not in name.rsplit("/", 1)[-1]:
                name += ":latest"
            return EngineWriter(Engine(docker_socket(self.location)), self.token, name)
        if scheme == "registry":
            from occystrap.destinations.registry import RegistryWriter

            assert self.location.ref is not None
            return RegistryWriter(
                self.location.ref,
                config,
                self.location.insecure(config.insecure),
                spool,
                self.token,
            )
        if scheme == "tar":
            # Re-encoded or filtered layers have sizes nobody knows in advance: no in-place
            # planning.
            from occystrap.destinations.dockerarchive import DockerArchiveWriter

            return DockerArchiveWriter(
                self.path,
                self.legacy_tar,
                self.token,
                in_place=config.compression is None and not config.filters.rewrites,
                oci_media_types=convert,
            )
        if scheme == "oci":
            from occystrap.destinations.oci import OCILayoutWriter

            return OCILayoutWriter(
                self.path, self.location.tag, self.token, oci_media_types=convert
            )
        if scheme == "dir":
            unique = bool(self.location.option("unique_names", False))
            expand = bool(self.location.option("expand", False))
            preserve = self.location.option("preserve_modes", False) is True
            if preserve and not expand:
                raise UsageError(
                    f"{self.location}: ?preserve_modes=true applies only with ?expand=true"
                )
            from occystrap.destinations.directory import DirectoryWriter

            return DirectoryWriter(
                self.path, unique, self.token, expand=expand, preserve_modes=preserve
            )
        raise AssertionError(scheme)

    def remove_temp_files(self, temp_dir: str | None) -> None:
        """After a crash or an interrupt: remove everything this run left beside the output."""
        shutil.rmtree(self.spool_dir(temp_dir), ignore_errors=True)
        if not self.is_local:
            return
        remove_paths(glob.glob(glob.escape(self.temp_prefix) + "*"))
        if self.location.scheme in ("dir", "oci") and os.path.isdir(self.path):
            remove_paths(
                glob.glob(
                    os.path.join(glob.escape(self.path), "**", f"*.occystrap-{self.token}.tmp"),
                    recursive=True,
                )
            )

    def remove_journal(self) -> None:
        """Last of all after an interrupt or a crash: the run's journal in a shared output
        directory (destinations/shared.py), once the writer's clean-up has read it."""
        if self.location.scheme in ("dir", "oci"):
            unlink_quietly(journal_path(self.path, self.token))


class Probe:
    """What resolve asks the destination before planning an image: is this exact manifest
    there already (then nothing is copied), and which layers are. Made in the resolve
    process, so its registry client is that process's own."""

    def __init__(self, dest: Destination, config: Config) -> None:
        self.dest = dest
        self._pool: ClientPool | None = None
        self._client: RegistryClient | None = None
        self._lock = threading.Lock()
        self._sending: set[str] = set()  # digests this run sends to the registry
        if dest.is_registry:
            assert dest.location.ref is not None
            from occystrap.registry.clients import ClientPool

            self._pool = ClientPool(config, pool_size=4, role="dest")
            self._client = self._pool.get(
                dest.location.ref.host, dest.location.insecure(config.insecure)
            )

    def up_to_date(self, target: ImageRef | None, digest: str) -> bool:
        if self._client is None or target is None:
            return False
        head = self._client.head_manifest(target.name, target.tag or digest, ACCEPT)
        return head is not None and head.digest == digest

    def has_layer(self, digest: str, size: int, target: ImageRef | None = None) -> bool:
        if self._client is None or target is None:
            return self.dest.has_layer(digest, size)
        return self._client.blob_exists(target.name, digest) is not None

    def blob_state(
        self, digest: str, size: int, target: ImageRef | None = None
    ) -> Literal["present", "missing", "sending"]:
        """Where the blob stands at the destination: "present" (no bytes move), "missing"
        (a HEAD there said so), or "sending": on a registry, a blob once found missing is
        not HEADed again in the run, since this run sends it to that registry and the write
        stage mounts it from the repository it went to (`destinations/registry.py`): in a
        new repository a HEAD would only say 404. The target repository may still hold it;
        write HEADs it there before it falls back to an upload. Images planned side by side
        may each ask once before the first answer is known. Thread-safe."""
        if self._client is None or target is None:
            return "present" if self.dest.has_layer(digest, size) else "missing"
        with self._lock:
            if digest in self._sending:
                return "sending"
        if self._client.blob_exists(target.name, digest) is not None:
            return "present"
        with self._lock:
            self._sending.add(digest)
        return "missing"

    def mountable(self, places: tuple[str, ...], target: ImageRef | None) -> list[str]:
        """Of the `HOST/REPOSITORY` places the layer cache recorded, the repositories of
        this registry other than the target's (most recent first): a blob there can be
        mounted into the target."""
        if self._client is None or target is None:
            return []
        prefix = f"{target.host}/"
        return [
            p[len(prefix) :]
            for p in reversed(places)
            if p.startswith(prefix) and p[len(prefix) :] != target.name
        ]

    def blob_in(self, repository: str, digest: str) -> bool:
        """HEAD the blob in another repository of the destination registry."""
        assert self._client is not None
        return self._client.blob_exists(repository, digest) is not None

    def has_manifest(self, target: ImageRef | None, digest: str, tag: str = "") -> bool:
        """Is this manifest there already (under `tag`, when given)? A referrer found at the
        destination is not copied again."""
        if self._client is None or target is None:
            return False  # a local layout is rewritten: entries are cheap and idempotent
        head = self._client.head_manifest(target.name, tag or digest, ACCEPT)
        return head is not None and head.digest == digest

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
