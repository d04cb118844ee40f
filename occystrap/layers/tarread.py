"""Reading a layer's tar stream member by member, in bounded memory.

`check`, `search` and the layer filters all read layers the same way: decompressed chunks
from `layers/codec.py`, wrapped in a file-like object that hashes what passes (the sha256 of a
decompressed layer is its diff_id), parsed by tarfile's stream mode. tarfile keeps every
member it has seen in `TarFile.members`, which for a layer of a million files is a lot of
memory; `members()` forgets each one once the caller is done with it.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from occystrap.reference import digest_of_hash


def normalize(name: str) -> str:
    """A tar member name as a path relative to the root: no `./`, no leading `/`."""
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/").rstrip("/")


class _Hashed:
    """What passes through is hashed (sha256) and counted."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        raise NotImplementedError

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return digest_of_hash(self.hasher)


class HashingReader(_Hashed):
    """A read-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self.f = f

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hasher.update(data)
        self.count += len(data)
        return data


class ChunkReader(_Hashed):
    """A file-like object over an iterator of byte chunks (for tarfile's stream mode),
    hashing everything it hands out. `tee`, when given, also receives every chunk as it is
    taken from the iterator: the bytes pass on unchanged while tarfile looks at them."""

    def __init__(
        self, chunks: Iterator[bytes], tee: Callable[[bytes], object] | None = None
    ) -> None:
        super().__init__()
        self.chunks = chunks
        self.tee = tee
        self.buffer = b""
        self.pos = 0  # read position in buffer: no re-copying the tail on every small read

    def read(self, n: int = -1) -> bytes:
        parts = []
        want = n
        while want != 0:
            if self.pos >= len(self.buffer):
                chunk = next(self.chunks, None)
                if chunk is None:
                    break
                if self.tee is not None:
                    self.tee(chunk)
                self.buffer, self.pos = chunk, 0
            end = len(self.buffer) if want < 0 else min(len(self.buffer), self.pos + want)
            parts.append(self.buffer[self.pos : end])
            if want > 0:
                want -= end - self.pos
            self.pos = end
        data = b"".join(parts)
        self.hasher.update(data)
        self.count += len(data)
        return data


class CorruptTar(tarfile.TarError):
    """A header that is not one, or a stream that ends inside a header."""


# tarfile's own header errors: undocumented, and so not in typeshed
_BAD_HEADER: tuple[type[Exception], ...] = (
    tarfile.InvalidHeaderError,  # type: ignore[attr-defined]
    tarfile.TruncatedHeaderError,  # type: ignore[attr-defined]
)
_EMPTY_HEADER: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile takes a bad header after the first for the end of the archive and stops
    quietly: a layer damaged in the middle would read as a shorter, valid one. This raises
    instead (an exception that is not a tarfile.HeaderError passes through `next()`).

    And the reverse: tarfile calls a stream with no bytes at all "empty file", an error,
    where an image's empty layer may be exactly that (a 0-byte layer.tar, as Bazel's
    rules_docker and some Windows images write; skopeo and umoci read it as an empty
    layer). Here it is an archive with no members."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        try:
            return super().fromtarfile(tar)
        except _BAD_HEADER as exc:
            raise CorruptTar(f"bad tar header at offset {tar.offset}: {exc}") from None
        except _EMPTY_HEADER:
            if tar.offset == 0:
                return None  # type: ignore[return-value]  # next() reads it as the end
            raise


def open_stream(fileobj: Any) -> tarfile.TarFile:
    """tarfile's stream mode, strict about headers, with names decoded the way they are
    written back."""
    return tarfile.open(
        fileobj=fileobj,
        mode="r|",
        encoding="utf-8",
        errors="surrogateescape",
        tarinfo=_StrictTarInfo,
    )


def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Each member in turn; its data may be read (`tar.extractfile`) until the next one.
    Unlike iterating the TarFile, nothing is kept of the members already seen."""
    while True:
        member = tar.next()
        tar.members.clear()  # type: ignore[attr-defined]  # undocumented, not in typeshed
        if member is None:
            return
        yield member
