"""`occystrap search`: which layers hold paths matching a glob or a regular expression.

Each layer is streamed once through tarfile's stream mode: only member headers are looked
at, file contents are skipped, nothing is held whole in memory.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from occystrap import mediatypes
from occystrap.commands.images import Image, images_of, layer_file, opened, scratch
from occystrap.config import Config
from occystrap.errors import ManifestError
from occystrap.filters.search import Match, kind, matcher
from occystrap.filters.search import script_line as script_line  # the command prints with it
from occystrap.filters.search import text_lines as text_lines
from occystrap.layers import codec
from occystrap.layers.tarread import ChunkReader, members, normalize, open_stream
from occystrap.reference import Location


def search_layer(
    f: Any, media_type: str, match: Callable[[str], bool]
) -> Iterator[tarfile.TarInfo]:
    plain = ChunkReader(codec.decompressed_chunks(f, mediatypes.compression_of(media_type)))
    try:
        with open_stream(plain) as tar:
            for member in members(tar):
                if match(normalize(member.name)):
                    yield member
    except tarfile.TarError as exc:
        raise ManifestError(f"not a valid tar stream: {exc}") from None


def search_image(image: Image, match: Callable[[str], bool], tmpdir: str) -> Iterator[Match]:
    artifact = mediatypes.artifact_type(image.manifest)
    if artifact is not None:
        raise ManifestError(
            f"{image.label}: {image.resolved.digest} is an OCI artifact "
            f"({artifact}), not a container image: there are no paths to "
            "search"
        )
    ref = image.entry.ref
    name = ref.name or "-"
    tag = ref.tag or ref.digest or image.resolved.digest
    for layer in image.manifest.layers:
        lf = layer_file(image, layer, tmpdir)
        try:
            with open(lf.path, "rb") as f:
                for member in search_layer(f, layer.media_type, match):
                    yield Match(
                        name,
                        tag,
                        layer.digest,
                        normalize(member.name),
                        kind(member),
                        member.size,
                        member.linkname if member.issym() or member.islnk() else None,
                    )
        except ManifestError as exc:
            raise ManifestError(f"layer {layer.digest}: {exc}") from None
        finally:
            lf.discard()


def run(location: Location, config: Config, pattern: str, regex: bool) -> Iterator[Match]:
    """Every match, layer by layer, in manifest order (a generator: results print as they
    are found)."""
    match = matcher(pattern, regex)
    with scratch(config, "search") as tmp, opened(location, config, tmp) as source:
        for entry in source.entries():
            for image in images_of(entry, config):
                yield from search_image(image, match, tmp)


def to_dict(m: Match) -> dict[str, Any]:
    return asdict(m)
