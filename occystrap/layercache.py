"""--layer-cache: remembers, across runs, which source layer became which re-encoded blob.

Re-encoding is the only costly transformation, and it is deterministic for a given source
blob and settings, so its result can be reused: a hit turns a download plus a recompression
into one HEAD at the destination (a hit is trusted only once that HEAD confirms the blob).
Entries are keyed by the source digest and the settings, never by position, so layers that
complete out of order cannot be mixed up. The file is JSON, replaced atomically under an
exclusive flock on a lock file beside it, so several processes may share it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable

from occystrap.errors import UsageError
from occystrap.formats.base import write_atomic
from occystrap.reference import DIGEST_RE
from occystrap.transform import NewDescriptor

VERSION = 1


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
            raise UsageError(f"--layer-cache {self.path}: not an occystrap layer cache "
                             f"(version {VERSION})")
        return dict(doc.get("entries", {}))

    def lookup(self, source_digest: str, compression: str, level: int | None
               ) -> NewDescriptor | None:
        entry = self._entries.get(key(source_digest, compression, level))
        if not isinstance(entry, dict):
            return None
        digest, size, media_type = entry.get("digest"), entry.get("size"), entry.get("mediaType")
        if not (isinstance(digest, str) and DIGEST_RE.match(digest) and isinstance(size, int)
                and isinstance(media_type, str)):
            return None  # a damaged entry is a miss, not an error
        return NewDescriptor(digest, size, media_type)

    def record(self, entries: Iterable[tuple[str, NewDescriptor]]) -> None:
        """Add `(key, descriptor)` pairs: merged into the file as it is now on disk, so
        entries another process wrote meanwhile are kept."""
        new = {k: {"digest": d.digest, "size": d.size, "mediaType": d.media_type}
               for k, d in entries}
        if not new:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            current = self._read()
            current.update(new)
            body = json.dumps({"version": VERSION, "entries": current}, indent=1,
                              sort_keys=True).encode()
            write_atomic(self.path, body, f"{os.getpid()}")
            self._entries = current
