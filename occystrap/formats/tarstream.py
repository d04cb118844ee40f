"""A minimal sequential tar writer that copies member data with `os.sendfile`.

`tarfile.addfile` copies through 16 KiB Python reads; a spooled layer is already a file, so
the kernel can move it straight into the archive. Members are written in PAX format (no 8 GiB
member limit) with fixed ownership and mtime, so output does not depend on who ran it.
"""

from __future__ import annotations

import os
import tarfile
from typing import BinaryIO

_BLOCK = 512


class TarStream:
    """Writes to an unbuffered file (`open(path, "wb", buffering=0)`): member data bypasses
    Python with sendfile, so no userspace buffer may sit between the two."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._f = fileobj
        self.bytes_written = 0

    def _header(self, name: str, size: int) -> None:
        if name.startswith(("/", "./")) or ".." in name.split("/"):
            raise ValueError(f"unsafe tar member name {name!r}")
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        info.mtime = 0
        info.uname = info.gname = ""
        header = info.tobuf(format=tarfile.PAX_FORMAT)
        self._f.write(header)
        self.bytes_written += len(header)

    def _pad(self, size: int) -> None:
        rest = size % _BLOCK
        if rest:
            self._f.write(b"\0" * (_BLOCK - rest))
            self.bytes_written += _BLOCK - rest

    def add_bytes(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self._f.write(data)
        self.bytes_written += len(data)
        self._pad(len(data))

    def add_file(self, name: str, path: str) -> int:
        """Append the file at `path`; returns its size."""
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            self._header(name, size)
            out_fd = self._f.fileno()
            offset = 0
            while offset < size:
                sent = os.sendfile(out_fd, src.fileno(), offset, min(size - offset, 1 << 30))
                if sent == 0:
                    raise OSError(f"{path} shrank while being archived")
                offset += sent
        self.bytes_written += size
        self._pad(size)
        return size

    def close(self) -> None:
        """Write the two zero blocks that end an archive (and pad to a 10 KiB record)."""
        end = b"\0" * (2 * _BLOCK)
        self._f.write(end)
        self.bytes_written += len(end)
        record = tarfile.RECORDSIZE
        rest = self.bytes_written % record
        if rest:
            self._f.write(b"\0" * (record - rest))
            self.bytes_written += record - rest
