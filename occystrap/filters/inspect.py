"""`inspect:file=PATH`: one JSON line per image appended to PATH, with its layers' history
(what `docker history` shows), for audits of what a mirror run copied.

The line describes the image as written: after every filter of the chain, whatever the
position of `inspect` in it. History entries come newest first, as in `docker history`; the
entries that made a layer (`empty_layer` unset) are paired with the layers in order, and
carry that layer's digest and uncompressed size. The newest entry's Id is the image ID (the
config digest); the others are `<missing>`, as `docker history` shows for pulled images.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from typing import Any

from occystrap.errors import UsageError


@dataclass(frozen=True)
class Inspect:
    file: str

    def check_writable(self) -> None:
        """Before a byte moves: a run that cannot write its report should not start (and
        the check leaves no empty file behind)."""
        if os.path.isdir(self.file):
            why = "it is a directory"
        elif os.path.exists(self.file):
            why = "" if os.access(self.file, os.W_OK) else "permission denied"
        else:
            parent = os.path.dirname(os.path.abspath(self.file))
            why = (
                "no such directory"
                if not os.path.isdir(parent)
                else ""
                if os.access(parent, os.W_OK | os.X_OK)
                else "permission denied"
            )
        if why:
            raise UsageError(f"inspect filter: cannot write {self.file}: {why}")

    def append(self, line: dict[str, Any]) -> None:
        """One write of one whole line with O_APPEND: concurrent runs never interleave. A
        short write (a full disk) is undone when nobody appended since, and raised."""
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            written = os.write(fd, data)
            if written != len(data):
                if os.fstat(fd).st_size == before + written:
                    os.ftruncate(fd, before)
                raise OSError(errno.ENOSPC, "short write (disk full?)")
        finally:
            os.close(fd)


def history(
    config: dict[str, Any], layers: list[tuple[str, int]], image_id: str, tags: list[str]
) -> list[dict[str, Any]]:
    """`docker history` rows, newest first. `layers`: (digest, uncompressed size) per layer
    in manifest order."""
    entries = [e for e in config.get("history") or [] if isinstance(e, dict)]
    rows = []
    pending = list(layers)
    for entry in entries:
        row: dict[str, Any] = {
            "Created": entry.get("created"),
            "CreatedBy": entry.get("created_by", ""),
            "Comment": entry.get("comment", ""),
            "Size": 0,
        }
        if not entry.get("empty_layer") and pending:
            digest, size = pending.pop(0)
            row["Layer"], row["Size"] = digest, size
        rows.append(row)
    for digest, size in pending:  # layers the history does not account for
        rows.append(
            {"Created": None, "CreatedBy": "", "Comment": "", "Size": size, "Layer": digest}
        )
    rows.reverse()
    for n, row in enumerate(rows):
        row["Id"] = image_id if n == 0 else "<missing>"
        row["Tags"] = tags if n == 0 else []
    return rows
