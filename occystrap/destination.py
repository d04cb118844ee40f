"""Turns a destination Location into what the stages need: a writer, a spool directory on
the same filesystem, and a cheap "does it already have this layer?" probe for resolve."""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass

from occystrap.formats.base import Writer, remove_paths
from occystrap.formats.directory import DirectoryWriter
from occystrap.formats.dockerarchive import DockerArchiveWriter
from occystrap.formats.ocilayout import OCILayoutWriter
from occystrap.reference import Location


@dataclass(frozen=True)
class Destination:
    location: Location
    token: str

    @property
    def path(self) -> str:
        assert self.location.path is not None
        return os.path.abspath(self.location.path)

    @property
    def legacy_tar(self) -> bool:
        fmt = str(self.location.option("format", "")).lower()
        return self.location.scheme == "tar" and fmt in ("v1.2", "1.2", "legacy")

    @property
    def needs_uncompressed(self) -> bool:
        return self.location.scheme == "dir" or self.legacy_tar

    @property
    def temp_prefix(self) -> str:
        """Every temp file of this run beside the destination starts with this."""
        head, tail = os.path.split(self.path)
        return os.path.join(head, f".{tail}.occystrap-{self.token}")

    def spool_dir(self, temp_dir: str | None) -> str:
        if temp_dir:
            return os.path.join(os.path.abspath(temp_dir), f"occystrap-spool-{self.token}")
        return self.temp_prefix + ".spool"

    def has_layer(self, digest: str, size: int) -> bool:
        scheme = self.location.scheme
        if scheme == "oci":
            return OCILayoutWriter.has_blob(self.path, digest, size)
        if scheme == "dir":
            return DirectoryWriter.has_layer(self.path, digest)
        return False

    def open_writer(self) -> Writer:
        scheme = self.location.scheme
        if scheme == "tar":
            return DockerArchiveWriter(self.path, self.legacy_tar, self.token)
        if scheme == "oci":
            return OCILayoutWriter(self.path, self.location.tag, self.token)
        if scheme == "dir":
            unique = bool(self.location.option("unique_names", False))
            return DirectoryWriter(self.path, unique, self.token)
        raise AssertionError(scheme)

    def remove_temp_files(self, temp_dir: str | None) -> None:
        """After a crash or an interrupt: remove everything this run left beside the output."""
        shutil.rmtree(self.spool_dir(temp_dir), ignore_errors=True)
        remove_paths(glob.glob(glob.escape(self.temp_prefix) + "*"))
        if self.location.scheme in ("dir", "oci") and os.path.isdir(self.path):
            remove_paths(glob.glob(os.path.join(glob.escape(self.path), "**",
                                                f"*.occystrap-{self.token}.tmp"),
                                   recursive=True))
