"""`search:pattern=GLOB|regex=RE[,script_friendly=true]`: report matching paths, change
nothing.

The layer passes through unchanged; its members are looked at on the way (in the compress
stage, which reads every layer once when a filter is given). Matches reach the supervisor as
messages and are printed on stdout after the run, image by image, layer by layer in manifest
order, in the same formats as the `search` command. A search placed after a filter that
rewrites layers sees the members as rewritten (`-f exclude:pattern=*.pyc -f search:...`
finds no `.pyc`).
"""

from __future__ import annotations

import fnmatch
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from occystrap.errors import UsageError
from occystrap.layers.tarread import normalize
from occystrap.messages import SearchHit, SearchHits


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


def printable(name: str) -> str:
    """A name that is not UTF-8 (decoded with surrogateescape) with its odd bytes as \\xNN:
    it can travel as msgpack and be printed."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Search:
    pattern: str
    regex: bool = False
    script_friendly: bool = False

    @cached_property
    def match(self) -> Callable[[str], bool]:
        return matcher(self.pattern, self.regex)

    def hit(self, member: tarfile.TarInfo) -> SearchHit | None:
        path = normalize(member.name)
        if not self.match(path):
            return None
        link = member.linkname if member.issym() or member.islnk() else None
        return SearchHit(
            path=printable(path),
            type=kind(member),
            size=member.size,
            target=printable(link) if link is not None else None,
        )


def report(search: Search, position: int, found: Iterable[SearchHits]) -> Iterator[str]:
    """The lines to print for the search filter at `position` of the chain, from `found`
    in the order given: script lines, or text grouped by image, then by layer."""
    seen: set[tuple[str, str, str]] = set()  # (image, tag, layer): once, however many runs
    count = layers = 0
    image = None
    for h in found:
        key = (h.name, h.tag, h.layer)
        if h.position != position or key in seen:
            continue
        seen.add(key)
        layers += 1
        for hit in h.hits:
            m = Match(h.name or "-", h.tag, h.layer, hit.path, hit.type, hit.size, hit.target)
            count += 1
            if search.script_friendly:
                yield script_line(m)
                continue
            if (m.image, m.tag) != image:
                image = (m.image, m.tag)
                yield f"Image: {m.image}:{m.tag}"
            link = f" -> {m.target}" if m.target is not None else ""
            if hit is h.hits[0]:
                yield f"  Layer: {m.layer}"
            yield f"    {m.path}{link} ({m.type}, {m.size} bytes)"
    if not search.script_friendly:
        yield f"Found {count} matches in {layers} layers."
