"""`occystrap search`: which layers hold paths matching a glob or a regular expression.

Each layer is streamed once through tarfile's stream mode: only member headers are looked
at, file contents are skipped, nothing is held whole in memory.
"""

from __future__ import annotations

import fnmatch
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from occystrap import layerio, mediatypes
from occystrap.checks import normalize
from occystrap.config import Config
from occystrap.errors import ManifestError, UsageError
from occystrap.inspect import ChunkReader, Image, Opener, images_of, layer_file, scratch
from occystrap.reference import Location


@dataclass
class Match:
    image: str  # NAME (repository), as in image:tag
    tag: str
    layer: str  # the layer's digest
    path: str  # relative to the root, no leading /
    type: str
    size: int
    target: str | None = None  # of a symlink or hard link


def matcher(pattern: str, regex: bool) -> Callable[[str], bool]:
    """A predicate on a path relative to the root (no leading `/`). A glob matches the whole
    path, with or without a leading `/`; a regex may match anywhere (anchor it with ^...$)."""
    if regex:
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"bad regular expression {pattern!r}: {exc}") from None
        return lambda path: bool(rx.search(path) or rx.search("/" + path))
    glob = pattern.lstrip("/")
    return lambda path: fnmatch.fnmatchcase(path, glob)


def kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "directory"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return "other"


def search_layer(f: Any, media_type: str, match: Callable[[str], bool]
                 ) -> Iterator[tarfile.TarInfo]:
    plain = ChunkReader(layerio.decompressed_chunks(f, mediatypes.compression_of(media_type)))
    try:
        with tarfile.open(fileobj=plain, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                if match(normalize(member.name)):
                    yield member
    except tarfile.TarError as exc:
        raise ManifestError(f"not a valid tar stream: {exc}") from None


def search_image(image: Image, match: Callable[[str], bool], tmpdir: str) -> Iterator[Match]:
    ref = image.entry.ref
    name = ref.name or "-"
    tag = ref.tag or ref.digest or image.resolved.digest
    for layer in image.manifest.layers:
        lf = layer_file(image, layer, tmpdir)
        try:
            with open(lf.path, "rb") as f:
                for member in search_layer(f, layer.media_type, match):
                    yield Match(name, tag, layer.digest, normalize(member.name), kind(member),
                                member.size,
                                member.linkname if member.issym() or member.islnk() else None)
        except ManifestError as exc:
            raise ManifestError(f"layer {layer.digest}: {exc}") from None
        finally:
            lf.discard()


def run(location: Location, config: Config, pattern: str, regex: bool) -> Iterator[Match]:
    """Every match, layer by layer, in manifest order (a generator: results print as they
    are found)."""
    match = matcher(pattern, regex)
    with scratch(config, "search") as tmp, \
            Opener(config, tmp) as opener:
        source, _ = opener.open(location)
        for entry in source.entries():
            for image in images_of(entry, source, config):
                yield from search_image(image, match, tmp)


def script_line(m: Match) -> str:
    return f"{m.image}:{m.tag}:{m.layer}:{m.path}"


def text_lines(matches: Iterator[Match]) -> Iterator[str]:
    """`Layer: DIGEST`, then one indented line per match, then the count."""
    layer = None
    layers = 0
    count = 0
    for m in matches:
        if m.layer != layer:
            if layer is not None:
                yield ""
            layer = m.layer
            layers += 1
            yield f"Layer: {m.layer}"
        count += 1
        link = f" -> {m.target}" if m.target is not None else ""
        yield f"  {m.path}{link} ({m.type}, {m.size} bytes)"
    if count:
        yield ""
    yield f"Found {count} matches in {layers} layers."


def to_dict(m: Match) -> dict[str, Any]:
    return asdict(m)
