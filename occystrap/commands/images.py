"""What `info`, `check` and `search` share: opening a source exactly as the pipeline's
resolve stage does (`sources.open_source`), picking the image(s) of an index, and a layer's
bytes in a file (a registry download into a temp file, or the file a local source already
has on disk).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from occystrap import mediatypes
from occystrap.config import Config
from occystrap.errors import UsageError
from occystrap.files import unlink_quietly
from occystrap.layers.codec import copy_blob
from occystrap.mediatypes import Descriptor, ImageIndex, ImageManifest
from occystrap.reference import Location
from occystrap.registry.clients import ClientPool
from occystrap.sources import (
    Entry,
    ImageSource,
    Resolved,
    Source,
    check_depth,
    is_local,
    local_blob,
    open_source,
    platform_manifest,
)
from occystrap.sources.registry import RegistrySource


def scratch(config: Config, what: str) -> tempfile.TemporaryDirectory[str]:
    """The temporary directory layers (and a tar:// source's members) pass through.
    UsageError when it cannot be made in --temp-dir."""
    try:
        return tempfile.TemporaryDirectory(prefix=f"occystrap-{what}-", dir=config.temp_dir)
    except OSError as exc:
        raise UsageError(
            f"cannot create a temporary directory in "
            f"{config.temp_dir or tempfile.gettempdir()}: {exc.strerror}"
        ) from None


@contextmanager
def opened(location: Location, config: Config, spool: str) -> Iterator[Source]:
    """The source behind `location`, outside a pipeline, with registry clients of its own
    (closed on exit). `spool` is where a tar:// or docker:// source unpacks its members (a
    temp directory)."""
    clients = ClientPool(config, 4, role="src")
    try:
        source, _ = open_source(location, config, clients, spool)
        yield source
    finally:
        clients.close()


@dataclass
class Image:
    """One single-platform image of an entry: its manifest, and the index it came from."""

    entry: Entry
    source: ImageSource
    top: Resolved  # what the reference names: an index or the manifest itself
    resolved: Resolved  # the image manifest
    platform: str | None = None  # from the index descriptor, when there is one

    @property
    def manifest(self) -> ImageManifest:
        assert isinstance(self.resolved.parsed, ImageManifest)
        return self.resolved.parsed

    @property
    def label(self) -> str:
        text = str(self.entry.ref.repo_tag or self.entry.ref)
        return f"{text} [{self.platform}]" if self.platform else text


def images_of(entry: Entry, config: Config) -> Iterator[Image]:
    """The image(s) to look at for one entry: the manifest, or for an index the platform
    `config` asks for (every platform with --all-platforms; attestations are not platforms,
    nested indexes are searched)."""
    source = entry.source
    top = source.fetch_manifest(entry.reference)
    if not isinstance(top.parsed, ImageIndex):
        yield Image(entry, source, top, top)
        return
    if not config.all_platforms:
        chosen = platform_manifest(source, top, config.platform)
        yield Image(entry, source, top, chosen, platform_of(top.parsed, chosen.digest))
        return
    yield from _every_platform(entry, source, top, top, 0)


def _every_platform(
    entry: Entry, source: ImageSource, top: Resolved, index: Resolved, depth: int
) -> Iterator[Image]:
    check_depth(index.digest, depth)
    assert isinstance(index.parsed, ImageIndex)
    for d in index.parsed.manifests:
        if mediatypes.is_attestation(d):
            continue
        child = source.fetch_manifest(d.digest)
        if isinstance(child.parsed, ImageIndex):
            yield from _every_platform(entry, source, top, child, depth + 1)
        else:
            yield Image(entry, source, top, child, str(d.platform) if d.platform else None)


def platform_of(index: ImageIndex, digest: str) -> str | None:
    """The platform an index's descriptor gives `digest` (None when it is nested deeper or
    has none)."""
    for d in index.manifests:
        if d.digest == digest and d.platform:
            return str(d.platform)
    return None


def parse_config(raw: bytes) -> dict[str, Any]:
    """An image config as a dict; ManifestError when it is not a JSON object."""
    return mediatypes.json_object(raw, "image config")


@dataclass
class LayerFile:
    """A layer's compressed bytes in a file: `temporary` ones are ours to remove."""

    path: str
    verified: bool  # the blob's digest was checked while it was downloaded
    temporary: bool = field(default=False)

    def discard(self) -> None:
        if self.temporary:
            unlink_quietly(self.path)


def layer_file(image: Image, layer: Descriptor, tmpdir: str) -> LayerFile:
    """The layer's compressed bytes in a file. A registry layer is downloaded into `tmpdir`
    (DigestError when its bytes do not match), as is a member of a tar file read in place
    (copied out and checked again); any other local source's file is used where it is."""
    source = image.source
    dest = os.path.join(tmpdir, layer.digest.replace(":", "-"))
    if is_local(source):
        blob = local_blob(source, layer.digest, layer.size)
        if blob.size < 0:
            return LayerFile(blob.path, verified=blob.digest_seen is not None)
        path, offset = blob.path, blob.offset

        def fill() -> None:
            copy_blob(path, dest, layer.digest, layer.size, None, True, offset)

    else:
        assert isinstance(source, RegistrySource)  # the one image source that is not local
        client, name = source.client, source.ref.name

        def fill() -> None:
            client.download_blob(name, layer.digest, layer.size, dest)

    try:
        fill()
    except BaseException:
        LayerFile(dest, False, True).discard()
        raise
    return LayerFile(dest, verified=True, temporary=True)
