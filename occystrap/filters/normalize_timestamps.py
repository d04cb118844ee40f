"""`normalize-timestamps[:ts=N,config=true]`: the same image bytes from the same content.

Build tools stamp every file with the time of the build, so two builds of identical content
differ in every layer digest. Setting every member's mtime to one value and dropping the PAX
records that carry other times (atime, ctime, libarchive's creation time) makes a rebuilt
layer byte-identical to the last one. Everything else a member carries stays: ownership,
modes, extended attributes (file capabilities, SELinux labels) and hard links.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

#: PAX records holding times other than mtime; mtime itself is rewritten from the member
TIME_RECORDS = ("mtime", "atime", "ctime", "LIBARCHIVE.creationtime")


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NormalizeTimestamps:
    ts: int = 0
    config: bool = False  # also the config's `created` and every history entry's

    def member(self, member: tarfile.TarInfo) -> bool:
        member.mtime = self.ts
        headers = cast(dict[str, str], member.pax_headers)  # a dict; typeshed says Mapping
        for key in TIME_RECORDS:
            headers.pop(key, None)
        return True

    def rewrite_config(self, doc: dict[str, Any]) -> None:
        if not self.config:
            return
        stamp = rfc3339(self.ts)
        if "created" in doc:
            doc["created"] = stamp
        for entry in doc.get("history") or []:
            if isinstance(entry, dict) and "created" in entry:
                entry["created"] = stamp
