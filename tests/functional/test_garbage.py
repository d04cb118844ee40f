"""Each stage's reader fed garbage (hostile files, right digests, wrong content): one line,
exit 1, no internal error, nothing left behind. Library exceptions (tarfile, zlib/ISA-L,
zstd, msgspec, OS errors) are mapped to the error tree in one place (errors.from_library)."""

from __future__ import annotations

import os
import tarfile

import pytest

from tests import hostilefiles as hf
from tests.functional.test_faults import small_disk  # noqa: F401 - a fixture
from tools.imagebuilder import push_image

GARBAGE = os.urandom(3000)
PLAIN = hf.tar_of(("etc", 0o755, None), ("etc/hello", 0o644, b"hello\n"))


def one_error(r) -> str:
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("occystrap: error:")]
    assert len(lines) == 1, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def leftovers(tmp_path) -> list[str]:
    return sorted(n for n in os.listdir(tmp_path) if n not in ("home", "build", "src"))


@pytest.mark.parametrize(
    "stage, layers, args, query, words",
    [
        # verify (--verify-full): a layer said to be gzip that is not
        ("verify", [(GARBAGE, hf.TAR_GZIP, GARBAGE)], ["--verify-full"], "", "cannot decompress"),
        # compress (dir:// wants plain tar): the same
        ("compress", [(GARBAGE, hf.TAR_GZIP, GARBAGE)], [], "", "cannot decompress"),
        # compress (a filter reads the tar): gzip of bytes that are not a tar
        (
            "compress",
            [(hf.gzipped(GARBAGE), hf.TAR_GZIP, GARBAGE)],
            ["-f", "exclude:pattern=etc/*"],
            "",
            "layer sha256:",
        ),
        # write (?expand=true unpacks the tar): an uncompressed layer that is not a tar
        ("write", [(GARBAGE, hf.TAR, GARBAGE)], [], "?expand=true", "not a valid tar archive"),
    ],
)
def test_garbage_layers(occystrap_cli, tmp_path, stage, layers, args, query, words):
    src = hf.write_layout(tmp_path / "src", hf.image(tmp_path / "build", layers))
    dest = f"dir://{tmp_path / 'out'}{query}"
    if stage == "verify":
        dest = f"oci://{tmp_path / 'out'}"
    cmd = (
        ["process", src, dest, *args] if args and args[0] == "-f" else [*args, "process", src, dest]
    )
    line = one_error(occystrap_cli(*cmd))
    assert words in line, line
    assert leftovers(tmp_path) == []


def test_layer_blob_that_is_a_directory(occystrap_cli, tmp_path):
    """fetch copies a local layer: an OS error reading it fails the image."""
    built = hf.image(tmp_path / "build", [(hf.gzipped(PLAIN), hf.TAR_GZIP, PLAIN)])
    src = hf.write_layout(tmp_path / "src", built)
    blob = tmp_path / "src" / "blobs" / "sha256" / built.layers[0].digest[7:]
    blob.unlink()
    blob.mkdir()
    line = one_error(occystrap_cli("process", src, f"oci://{tmp_path / 'out'}"))
    assert built.layers[0].digest[7:] in line
    assert leftovers(tmp_path) == []


def test_size_beyond_64_bits_of_a_layer_the_destination_has(occystrap_cli, registry, tmp_path):
    """resolve: the layer is at the destination (so no byte is fetched), its descriptor
    says 2**64 + 1 bytes."""
    built = hf.image(tmp_path / "build", [(hf.gzipped(PLAIN), hf.TAR_GZIP, PLAIN)])
    push_image(registry.url, "garbage/big", "1.0", built)
    lying = hf.image(
        tmp_path / "build", [(hf.gzipped(PLAIN), hf.TAR_GZIP, PLAIN)], sizes=[2**64 + 1]
    )
    src = hf.write_layout(tmp_path / "src", lying)
    line = one_error(
        occystrap_cli("--insecure", "process", src, f"registry://{registry.host}/garbage/big:2.0")
    )
    assert "does not fit 64 bits" in line


def test_config_that_is_not_json(occystrap_cli, tmp_path):
    built = hf.image(
        tmp_path / "build", [(hf.gzipped(PLAIN), hf.TAR_GZIP, PLAIN)], config=b"\xff\xfe not json"
    )
    src = hf.write_layout(tmp_path / "src", built)
    line = one_error(occystrap_cli("process", src, f"oci://{tmp_path / 'out'}"))
    assert "config" in line
    assert leftovers(tmp_path) == []


def test_tar_source_larger_than_the_temp_dir(occystrap_cli, tmp_path, small_disk):  # noqa: F811
    """The tar source is spooled as it streams: a member larger than --temp-dir's free
    space is refused before the disk fills, with one line."""
    disk = small_disk("1m")
    big = os.urandom(3 * 2**20)
    layer = hf.tar_of(("big", 0o644, big))
    built = hf.image(tmp_path / "build", [(layer, hf.TAR, layer)])
    layout = tmp_path / "src"
    hf.write_layout(layout, built)
    archive = tmp_path / "src.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("oci-layout", "index.json", "blobs"):
            tf.add(layout / name, arcname=name)
    line = one_error(
        occystrap_cli(
            "--temp-dir", str(disk), "process", f"tar://{archive}", f"oci://{tmp_path / 'out'}"
        )
    )
    assert "not enough free space" in line and str(disk) in line
    assert os.listdir(disk) == []
