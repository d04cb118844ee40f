"""`exclude:pattern=GLOB[;GLOB...]`: leave paths out of every layer.

Patterns are shell globs matched against the whole path relative to the image root, with
or without a leading `/` (`/tmp/*` and `tmp/*` are the same pattern). `*` matches across
`/`, so `*.pyc` drops `.pyc` files at any depth. A pattern that matches a directory drops
the directory and everything below it. A whiteout for an excluded path (`.wh.NAME`) goes
too. A hard link that is kept while its target is excluded becomes a regular file holding
the target's data (see `layer._Rewrite`): a rewritten layer never refers to something it
no longer holds.
"""

from __future__ import annotations

import fnmatch
import tarfile
from dataclasses import dataclass

from occystrap.layers.tarread import normalize

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def clean_pattern(pattern: str) -> str:
    return normalize(pattern.strip())


def candidates(path: str) -> list[str]:
    """The paths a pattern may match to drop `path`: the path, each directory above it,
    and for a whiteout the path it deletes."""
    parts = path.split("/")
    out = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    base = parts[-1]
    if base.startswith(WHITEOUT) and base != OPAQUE:
        out.append("/".join([*parts[:-1], base[len(WHITEOUT) :]]))
    return out


@dataclass(frozen=True)
class Exclude:
    patterns: tuple[str, ...]

    def matches(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(c, p) for c in candidates(path) for p in self.patterns)

    def member(self, member: tarfile.TarInfo) -> bool:
        return not self.matches(normalize(member.name))
