"""Files on disk, the few ways occystrap changes them: atomic replacement, moves that work
across filesystems, clean-up that ignores what is already gone, and read-modify-write of a
JSON file under a directory's lock.

Nothing here decides what may be removed: callers pass only paths their run created (see
`destinations/shared.py` for outputs several runs share).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from occystrap.errors import DestinationError


def write_atomic(path: str, data: bytes, token: str) -> None:
    """Write `data` to a temp name beside `path` (`PATH.occystrap-TOKEN.tmp`, which a crashed
    run's clean-up finds by its token), fsync, then rename over `path`: a reader sees the old
    file or the new one, never a part. OSError as the system gives it."""
    tmp = f"{path}.occystrap-{token}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing `length` bytes of file `fd` from `offset` (bytes) to disk, without
    waiting: for a file that is fsynced whole later (a tar:// archive before its rename), so
    that the fsync finds little left and the disk writes overlap the rest of the run.
    posix_fadvise(POSIX_FADV_DONTNEED) starts writeback of the dirty range and drops only the
    pages already clean, so no data is lost. Advice only: a file that refuses it (a pipe's
    ESPIPE, a file system's EINVAL) is left as it is."""
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def unlink_quietly(path: str) -> None:
    """Remove the file `path`; one already gone is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def move_file(src: str, dst: str) -> None:
    """Rename `src` to `dst`; copy (to `dst.partial`, then renamed) and delete when they are
    on different filesystems. OSError for anything but EXDEV."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst + ".partial"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        os.unlink(src)


def remove_paths(paths: Iterable[str]) -> None:
    """Remove files and directory trees, ignoring those already gone (a symlink is removed,
    never followed)."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            unlink_quietly(path)


@contextmanager
def locked(root: str) -> Iterator[int]:
    """An exclusive flock on the directory `root`, the lock every run writing to it takes
    before changing what other runs see (index.json, catalog.json, shared blobs). Yields the
    directory's descriptor. Not re-entrant: a second `locked(root)` in the same process waits
    forever."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def update_json_locked(
    root: str, name: str, default: Callable[[], Any], change: Callable[[Any], None], token: str
) -> None:
    """Read-modify-write `root/name` under an exclusive flock on `root`, replacing the file
    atomically, so concurrent runs adding to one directory do not lose each other's entries.
    `default()` is the document when there is no file yet; `change(doc)` edits it in place.
    DestinationError when the file is not JSON."""
    with locked(root):
        path = os.path.join(root, name)
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            doc = default()
        except ValueError as exc:
            raise DestinationError(f"{path} is not valid JSON: {exc}") from None
        change(doc)
        write_atomic(path, json.dumps(doc, indent=2, sort_keys=True).encode(), token)
