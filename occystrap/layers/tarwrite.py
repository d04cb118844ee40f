"""Tar member headers, and a sequential writer that copies member data with `os.sendfile`.

`tarfile.addfile` copies through 16 KiB Python reads; a spooled layer is already a file, so
the kernel can move it straight into the archive. Members are written in PAX format (no 8 GiB
member limit) with fixed ownership and mtime, so output does not depend on who ran it.
Headers depend only on (name, size), which lets a tarball's layout be planned before any
member's bytes exist (see `destinations/tarplan.py`).
"""

from __future__ import annotations

import os
import tarfile
from typing import BinaryIO

from occystrap.files import start_writeback

BLOCK = 512


def header(name: str, size: int) -> bytes:
    if name.startswith(("/", "./")) or ".." in name.split("/"):
        raise ValueError(f"unsafe tar member name {name!r}")
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT)


def padding(size: int) -> int:
    return -size % BLOCK


class TarStream:
    """Appends members to an unbuffered file (`open(path, "wb", buffering=0)`) from its
    current position: member data bypasses Python with sendfile, so no userspace buffer may
    sit between the two. `start` is the file offset the stream begins at."""

    def __init__(self, fileobj: BinaryIO, start: int = 0) -> None:
        self._f = fileobj
        self.position = start

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            view = view[n:]
        self.position += len(data)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._write(header(name, len(data)) + data + b"\0" * padding(len(data)))

    def add_file(self, name: str, path: str) -> int:
        """Append the file at `path`; returns its size."""
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            self._write(header(name, size))
            # a socket stream (destinations/docker.py) sends with socket.sendfile
            copy_from = getattr(self._f, "copy_from", None)
            if copy_from is not None:
                copy_from(src.fileno(), size)
            else:
                out_fd = self._f.fileno()
                offset = 0
                while offset < size:
                    sent = os.sendfile(out_fd, src.fileno(), offset, min(size - offset, 1 << 30))
                    if sent == 0:
                        raise OSError(f"{path} shrank while being archived")
                    offset += sent
                start_writeback(out_fd, self.position, size)  # the archive is fsynced at its end
        self.position += size
        self._write(b"\0" * padding(size))
        return size

    def close(self) -> None:
        """Write the two zero blocks that end an archive, padded to a whole record."""
        end = 2 * BLOCK
        end += -(self.position + end) % tarfile.RECORDSIZE
        self._write(b"\0" * end)
