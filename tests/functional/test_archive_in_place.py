"""tar:// sources read in place (issue 17): an uncompressed archive in a regular file is
indexed from its headers and its members hashed where they lie, nothing spooled; a
compressed archive or a pipe is still read once as a stream. Both give the same images."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from occystrap.errors import ManifestError
from occystrap.sources.tarball import TarballSource
from tests.conftest import sha256_file
from tools import archivebuilder as ab


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, ab.Image]:
    image = ab.make_image(tmp_path / "build", 11, (300 << 10, 80 << 10), tags=["app:1"])
    path = tmp_path / "app.tar"
    ab.write_archive(path, ab.legacy_members([image]))
    return path, image


def _spool(tmp_path: Path) -> str:
    spool = tmp_path / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    return str(spool)


def test_an_uncompressed_archive_is_read_in_place(archive, tmp_path):
    path, image = archive
    spool = _spool(tmp_path)
    source = TarballSource(str(path), None, spool)
    assert os.listdir(spool) == []  # nothing copied
    [entry] = source.entries()
    manifest = source.fetch_manifest(entry.reference)
    layers = manifest.parsed.layers  # type: ignore[union-attr]
    assert len(layers) == len(image.layers)
    for layer in layers:
        blob = source.blob_file(layer.digest)
        assert blob.path == str(path) and blob.offset > 0 and blob.size == layer.size
        with open(path, "rb") as f:
            f.seek(blob.offset)
            assert ab.sha256_digest(f.read(blob.size)) == layer.digest


def test_a_compressed_archive_is_spooled_and_reads_the_same(archive, tmp_path):
    path, _ = archive
    packed = tmp_path / "app.tar.gz"
    with open(path, "rb") as f, gzip.open(packed, "wb", compresslevel=1) as out:
        shutil.copyfileobj(f, out)
    in_place = TarballSource(str(path), None, _spool(tmp_path / "a"))
    spool = _spool(tmp_path / "b")
    streamed = TarballSource(str(packed), None, spool)
    assert os.listdir(spool)  # the members were spooled
    [a], [b] = in_place.entries(), streamed.entries()
    assert in_place.fetch_manifest(a.reference).manifest == (
        streamed.fetch_manifest(b.reference).manifest
    )


def test_a_truncated_archive_is_one_line(archive, tmp_path):
    path, _ = archive
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - (200 << 10))  # inside the last big member
    with pytest.raises(ManifestError) as caught:
        TarballSource(str(path), None, _spool(tmp_path))
    assert str(caught.value).startswith(f"tar://{path}: ")


def test_a_copy_from_an_archive_read_in_place(archive, tmp_path, occystrap_cli):
    """The layers fetch copies out of their regions are the archive's, byte for byte."""
    path, image = archive
    r = occystrap_cli("process", f"tar://{path}", f"oci://{tmp_path / 'layout'}")
    assert r.returncode == 0, r.stderr
    for layer in image.layers:
        hexd = layer.digest.split(":", 1)[1]
        assert sha256_file(tmp_path / "layout" / "blobs" / "sha256" / hexd) == layer.digest


def _negative_size_member(path: Path) -> None:
    """An archive whose second member's size field is -512 in base-256 (the header is
    otherwise valid): tarfile before 3.11.14 seeks back and rereads it forever."""
    import tarfile

    info = tarfile.TarInfo("a")
    info.size = 3
    first = info.tobuf(tarfile.USTAR_FORMAT) + b"abc".ljust(512, b"\0")
    header = bytearray(tarfile.TarInfo("b").tobuf(tarfile.USTAR_FORMAT))
    header[124:136] = b"\xff" * 10 + (-512 & 0xFFFF).to_bytes(2, "big")  # base-256: -512
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    path.write_bytes(first + bytes(header) + b"\0" * 1024)


def test_a_member_of_negative_size_is_one_line(tmp_path):
    path = tmp_path / "neg.tar"
    _negative_size_member(path)
    with pytest.raises(ManifestError) as caught:
        TarballSource(str(path), None, _spool(tmp_path))
    assert "damaged archive" in str(caught.value)


def test_a_named_pipe_is_read_as_a_stream(archive, tmp_path):
    """`docker save x > fifo &` then tar://fifo: never opened twice (its writer would lose its
    reader), read once and spooled."""
    import threading

    path, _ = archive
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with open(fifo, "wb") as out:
                out.write(path.read_bytes())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    spool = _spool(tmp_path)
    source = TarballSource(str(fifo), None, spool)
    thread.join(10)
    assert errors == [] and os.listdir(spool)
    assert len(source.entries()) == 1


def test_a_recoded_copy_reads_layers_where_they_lie(
    archive, tmp_path, registry, skopeo, occystrap_cli
):
    """tar2reg with --compression: compress reads each plain layer from the archive itself
    (no spool copy by fetch), checks its diff_id, and writes the new blob into the spool;
    the archive is untouched and nothing is written beside it."""
    path, image = archive
    stats = tmp_path / "stats" / "run.json"
    stats.parent.mkdir()
    assert occystrap_cli("--version").returncode == 0  # its HOME is made beside the archive
    before = (sha256_file(path), os.stat(path).st_mtime_ns, sorted(os.listdir(path.parent)))
    dest = f"{registry.host}/recoded/app:1"
    r = occystrap_cli(
        "--insecure", "--compression", "gzip", "--stats-file", stats,
        "process", f"tar://{path}", f"registry://{dest}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (sha256_file(path), os.stat(path).st_mtime_ns, sorted(os.listdir(path.parent))) == before
    fetch = next(s for s in json.loads(stats.read_text())["stages"] if s["stage"] == "fetch")
    assert fetch["io"]["write_chars"] < sum(la.size for la in image.layers) // 10  # no copy
    # What was pushed: gzip layers whose content is the archive's layers, byte for byte.
    layout = tmp_path / "back"
    got = skopeo("copy", "--src-tls-verify=false", f"docker://{dest}", f"oci:{layout}:x")
    assert got.returncode == 0, got.stderr
    index = json.loads((layout / "index.json").read_text())
    manifest_hex = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_hex).read_text())
    plain = []
    for layer in manifest["layers"]:
        assert layer["mediaType"].endswith("gzip")
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
        plain.append(ab.sha256_digest(gzip.decompress(blob.read_bytes())))
    assert plain == [la.digest for la in image.layers]
