"""files.py: atomic replacement, moves across filesystems, clean-up of what is already gone,
and JSON read-modify-write under a directory's lock (on a real temp directory)."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import pytest

from occystrap import files
from occystrap.errors import DestinationError


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    files.write_atomic(str(target), b"new", "tok")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["index.json"]


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    target.mkdir()
    with pytest.raises(OSError):
        files.write_atomic(str(target), b"new", "tok")  # a file cannot replace a directory
    assert target.is_dir()


def test_unlink_quietly(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    files.unlink_quietly(str(path))
    files.unlink_quietly(str(path))  # already gone: no error
    assert not path.exists()


def test_start_writeback_keeps_the_data_and_takes_no_for_an_answer(tmp_path: Path) -> None:
    """The bytes are all there after the advice (it starts writeback, it does not drop dirty
    pages); a pipe, which refuses it (ESPIPE), is no error."""
    path = tmp_path / "archive"
    with open(path, "wb", buffering=0) as f:
        f.write(b"x" * 100_000)
        files.start_writeback(f.fileno(), 4096, 90_000)
        f.write(b"y")
    assert path.read_bytes() == b"x" * 100_000 + b"y"
    r, w = os.pipe()
    try:
        files.start_writeback(w, 0, 10)
    finally:
        os.close(r)
        os.close(w)


def test_move_file_within_a_filesystem(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"blob")
    files.move_file(str(src), str(dst))
    assert dst.read_bytes() == b"blob" and not src.exists()


def test_move_file_across_filesystems_copies_then_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename across filesystems fails with EXDEV (the spool on another disk than the
    output): the bytes are copied to `dst.partial`, renamed, and the source goes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"blob")
    real_replace = os.replace

    def replace(a: str, b: str) -> None:
        if a == str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(a, b)

    monkeypatch.setattr(files.os, "replace", replace)
    files.move_file(str(src), str(dst))
    assert dst.read_bytes() == b"blob"
    assert sorted(os.listdir(tmp_path)) == ["dst"]


def test_move_file_other_errors_are_raised(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        files.move_file(str(tmp_path / "missing"), str(tmp_path / "dst"))


def test_remove_paths_files_trees_links_and_the_missing(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"x")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "g").write_bytes(b"y")
    link = tmp_path / "link"
    link.symlink_to(kept)  # a link to a directory: the link goes, never what it points at
    single = tmp_path / "single"
    single.write_bytes(b"z")
    files.remove_paths([str(tree), str(link), str(single), str(tmp_path / "missing")])
    assert sorted(os.listdir(tmp_path)) == ["kept"]
    assert (kept / "g").read_bytes() == b"y"


def test_update_json_locked_creates_then_changes(tmp_path: Path) -> None:
    files.update_json_locked(
        str(tmp_path), "catalog.json", dict, lambda doc: doc.update(a=1), "tok"
    )
    files.update_json_locked(
        str(tmp_path), "catalog.json", dict, lambda doc: doc.update(b=2), "tok"
    )
    assert json.loads((tmp_path / "catalog.json").read_text()) == {"a": 1, "b": 2}


def test_update_json_locked_loses_no_update_between_threads(tmp_path: Path) -> None:
    """The flock is per open file description, so threads of one process serialise on it as
    runs in separate processes do."""

    def add(n: int) -> None:
        files.update_json_locked(
            str(tmp_path),
            "index.json",
            lambda: {"entries": []},
            lambda doc: doc["entries"].append(n),
            f"t{n}",
        )

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = json.loads((tmp_path / "index.json").read_text())
    assert sorted(doc["entries"]) == list(range(8))


def test_update_json_locked_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(DestinationError, match="index.json is not valid JSON"):
        files.update_json_locked(str(tmp_path), "index.json", dict, lambda doc: None, "tok")
    assert (tmp_path / "index.json").read_text() == "{not json"
