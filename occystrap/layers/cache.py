"""--layer-cache: remembers, across runs, which source layer became which re-encoded blob,
and where that blob was published.

Re-encoding is the only costly transformation, and it is deterministic for a given source
blob and settings, so its result can be reused: a hit turns a download plus a recompression
into one HEAD at the destination (a hit is trusted only once a HEAD confirms the blob). The
places a blob went to (registry host and repository) are kept too, so that a copy into a
new repository of that registry mounts it from one of them (after a HEAD there) instead of
fetching and re-encoding the layer again.
Entries are keyed by the source digest and the settings, never by position, so layers that
complete out of order cannot be mixed up. The file is JSON, replaced atomically under an
exclusive flock on a lock file beside it, so several processes may share it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable

import msgspec

from occystrap.errors import UsageError
from occystrap.files import write_atomic
from occystrap.layers.rewrite import NewDescriptor
from occystrap.reference import DIGEST_RE

VERSION = 1
MAX_PLACES = 16  # repositories remembered per blob, the most recent last


class Hit(msgspec.Struct, frozen=True):
    """A cached re-encoding: the blob it gave, and where it was published
    (`HOST/REPOSITORY`, the most recent last)."""

    descriptor: NewDescriptor
    places: tuple[str, ...] = ()


def key(source_digest: str, compression: str, level: int | None) -> str:
    return f"{source_digest}|{compression}|{'default' if level is None else level}"


class LayerCache:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._entries = self._read()

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            with open(self.path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UsageError(f"--layer-cache {self.path}: cannot read it: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise UsageError(
                f"--layer-cache {self.path}: not an occystrap layer cache (version {VERSION})"
            )
        return dict(doc.get("entries", {}))

    def lookup(self, source_digest: str, compression: str, level: int | None) -> Hit | None:
        entry = self._entries.get(key(source_digest, compression, level))
        if not isinstance(entry, dict):
            return None
        digest, size, media_type = entry.get("digest"), entry.get("size"), entry.get("mediaType")
        if not (
            isinstance(digest, str)
            and DIGEST_RE.match(digest)
            and isinstance(size, int)
            and isinstance(media_type, str)
        ):
            return None  # a damaged entry is a miss, not an error
        places = entry.get("places")
        return Hit(
            NewDescriptor(digest, size, media_type),
            tuple(p for p in places if isinstance(p, str)) if isinstance(places, list) else (),
        )

    def record(self, entries: Iterable[tuple[str, NewDescriptor, str | None]]) -> None:
        """Add `(key, descriptor, place)` triples (`place`: `HOST/REPOSITORY` the blob is
        published at, or None): merged into the file as it is now on disk, so entries
        another process wrote meanwhile are kept, and so are their places."""
        new: dict[str, tuple[NewDescriptor, str | None]] = {k: (d, p) for k, d, p in entries}
        if not new:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            current = self._read()
            before = json.dumps(current, sort_keys=True)
            for k, (d, place) in new.items():
                old = current.get(k)
                kept = (
                    old.get("places")
                    if isinstance(old, dict) and old.get("digest") == d.digest
                    else None
                )
                places = [
                    p
                    for p in (kept if isinstance(kept, list) else [])
                    if isinstance(p, str) and p != place
                ]
                if place:
                    places.append(place)
                current[k] = {
                    "digest": d.digest,
                    "size": d.size,
                    "mediaType": d.media_type,
                    "places": places[-MAX_PLACES:],
                }
            if json.dumps(current, sort_keys=True) == before:
                self._entries = current
                return
            body = json.dumps(
                {"version": VERSION, "entries": current}, indent=1, sort_keys=True
            ).encode()
            write_atomic(self.path, body, f"{os.getpid()}")
            self._entries = current
