"""Output directories that several runs may write at once: `oci://` layouts and
`dir://?unique_names=true`.

Blobs (layers, configs, manifests) are shared by images and by runs, so a run that fails may
remove what it brought in only when nothing else relies on it:

- an entry already published (`index.json`, a `manifest*.json`): the writer's `referenced`
  function reads them under the directory's lock, at the moment of the removal;
- another run still in progress, which found the blob already there (its probe in resolve,
  or its writer) and will publish an entry that references it later.

For the second, each run keeps a journal in the directory, `.occystrap-<token>.journal`: a
line `=PATH` for each path it relies on without having added it, `+PATH` for each path it
added, written under the lock. The run holds a shared flock on its journal for its whole life
(the descriptor is inherited by the stage processes), so another run tells a live journal
from one a killed run left behind (its lock is gone, and it is ignored). A path is removed only
under the lock, only when it is in this run's `+` set, and only when no published entry and no
live journal (this run's `=` lines, other runs' lines of both kinds) names it.

Nothing here removes a directory tree it did not add: the output directory, if this run created
it, goes at the end only when no entry was published in it and no other run is writing to it,
and then only by `rmdir` once this run's own files are gone.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterable

from occystrap.errors import DestinationError
from occystrap.files import locked, move_file, remove_paths, unlink_quietly

PREFIX, SUFFIX = ".occystrap-", ".journal"

#: What a writer says is referenced by published entries (paths relative to the root),
#: read with the lock held; None when they cannot be read (then nothing is removed).
Referenced = Callable[[], "set[str] | None"]


def journal_path(root: str, token: str) -> str:
    return os.path.join(root, f"{PREFIX}{token}{SUFFIX}")


def _append(path: str, mark: str, rels: Iterable[str]) -> None:
    lines = "".join(f"{mark}{rel}\n" for rel in rels)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:  # no writer in this run (or it has finished): nothing to keep
        return
    try:
        os.write(fd, lines.encode())
    finally:
        os.close(fd)


def _read(path: str) -> tuple[set[str], set[str]]:
    """(paths relied on, paths added) from a journal; empty when it is gone."""
    relied: set[str] = set()
    added: set[str] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if line[:1] == "=":
                    relied.add(line[1:])
                elif line[:1] == "+":
                    added.add(line[1:])
    except FileNotFoundError:
        pass
    return relied, added


def _alive(path: str) -> bool:
    """Whether the run that wrote this journal still holds it (a killed run's lock is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also lets go of the lock just taken
    return False


def rely_on(root: str, token: str, rel: str, present: Callable[[], bool]) -> bool:
    """For resolve's probe: under the lock, whether `rel` is there (`present()`), and if so
    note in run `token`'s journal that the run relies on it. False, nothing noted, when not."""
    if not os.path.isdir(root):
        return False
    with locked(root):
        if not present():
            return False
        _append(journal_path(root, token), "=", [rel])
    return True


class SharedDir:
    """One run's hold on a shared output directory: creates it (or joins it), keeps the
    journal, adds blobs without clobbering another run's, and cleans up only its own."""

    def __init__(self, root: str, token: str) -> None:
        """Raises DestinationError when the directory cannot be created or written."""
        self.root = root
        self.token = token
        self.journal = journal_path(root, token)
        self.created_root = not os.path.exists(root)
        self._fd = -1
        for _ in range(3):
            try:
                os.makedirs(root, exist_ok=True)
            except OSError as exc:
                raise DestinationError(f"cannot create directory {root}: {exc.strerror}") from None
            try:
                with locked(root) as lock_fd:
                    if os.fstat(lock_fd).st_nlink == 0:
                        continue  # another run removed it as we arrived: make it again
                    self._fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    fcntl.flock(self._fd, fcntl.LOCK_SH)
                    return
            except OSError as exc:
                raise DestinationError(f"cannot write to {root}: {exc.strerror}") from None
        raise DestinationError(f"cannot write to {root}: it keeps being removed")

    def put(self, target_rel: str, unit_rel: str, write_tmp: Callable[[str], None]) -> bool:
        """Make `target_rel` exist with a blob's bytes, written by `write_tmp(tmp)` to a temp
        name outside the lock (a copy may take long) and renamed in under it; when it is
        there already (another image or run put it there), the temp file goes and the run
        relies on the existing one. `unit_rel` is what a clean-up would remove (the blob, or
        a dir:// layer's directory). True when this call added it."""
        target = os.path.join(self.root, target_rel)
        if os.path.exists(target):
            with locked(self.root):
                if os.path.exists(target):
                    _append(self.journal, "=", [unit_rel])
                    return False
        tmp = os.path.join(self.root, f".{target_rel.replace('/', '_')}.occystrap-{self.token}.tmp")
        try:
            write_tmp(tmp)
            with locked(self.root):
                if os.path.exists(target):
                    unlink_quietly(tmp)
                    _append(self.journal, "=", [unit_rel])
                    return False
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(tmp, target)
                _append(self.journal, "+", [unit_rel])
                return True
        except BaseException:
            unlink_quietly(tmp)
            raise

    def adopt(self, spool_file: str, target_rel: str, unit_rel: str) -> bool:
        """`put` for a finished spool file, moved rather than copied when it can be."""
        try:
            return self.put(target_rel, unit_rel, lambda tmp: move_file(spool_file, tmp))
        finally:
            unlink_quietly(spool_file)  # still there when the blob was there already

    def put_bytes(self, target_rel: str, data: bytes) -> bool:
        """`put` for small bytes (a config, a manifest), fsynced before the rename."""

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

        return self.put(target_rel, target_rel, write)

    def _claims(self) -> set[str]:
        """Paths a live run relies on or added (lock held): this run's `=` lines, and every
        line of the other live journals."""
        claims: set[str] = set()
        for name in os.listdir(self.root):
            if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
                continue
            path = os.path.join(self.root, name)
            if path == self.journal:
                claims |= _read(path)[0]
            elif _alive(path):
                relied, added = _read(path)
                claims |= relied | added
        return claims

    def _others_alive(self) -> bool:
        return any(
            name.startswith(PREFIX)
            and name.endswith(SUFFIX)
            and os.path.join(self.root, name) != self.journal
            and _alive(os.path.join(self.root, name))
            for name in os.listdir(self.root)
        )

    def _remove(self, rels: Iterable[str], referenced: Referenced) -> None:
        """Remove `rels` but what is referenced or claimed (lock held)."""
        rels = set(rels)
        if not rels:
            return
        keep = referenced()
        if keep is None:
            return  # the published entries cannot be read: removing anything could hurt
        keep |= self._claims()
        remove_paths(os.path.join(self.root, rel) for rel in sorted(rels - keep))

    def remove_unreferenced(self, rels: Iterable[str], referenced: Referenced) -> None:
        """A failed image's clean-up: remove what it added (`rels`) that nothing else needs."""
        rels = list(rels)
        if rels:
            with locked(self.root):
                self._remove(rels, referenced)

    def close(
        self,
        referenced: Referenced,
        has_entries: Callable[[], bool],
        own_files: Iterable[str] = (),
        dirs: Iterable[str] = (),
    ) -> None:
        """End of the run, in the write stage or (after a crash) in the supervisor: remove
        what the journal says this run added and nothing needs (an image that neither
        published nor cleaned up), then the journal. A directory this run created goes too
        when no entry is published in it (`has_entries()`) and no other run is writing to
        it: `own_files`, then `dirs` and the root by rmdir, deepest first."""
        if self._fd < 0:
            return
        try:
            with locked(self.root):
                self._remove(_read(self.journal)[1], referenced)
                tidy = self.created_root and not has_entries() and not self._others_alive()
                unlink_quietly(self.journal)
                if tidy:
                    for rel in own_files:
                        unlink_quietly(os.path.join(self.root, rel))
                    for rel in [*dirs, ""]:
                        try:
                            os.rmdir(os.path.join(self.root, rel))
                        except OSError as exc:  # not empty: someone else's files are there
                            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                                raise
        except FileNotFoundError:
            pass  # the directory is gone already
        finally:
            os.close(self._fd)
            self._fd = -1
