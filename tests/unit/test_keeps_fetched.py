"""pipeline.keeps_fetched: fetch starts a downloaded blob's writeback only where the
destination keeps the file as it is (an oci:// layout it is renamed into), never for a
spool file that is copied, re-encoded or thrown away."""

from __future__ import annotations

from pathlib import Path

import pytest

from occystrap.config import Config
from occystrap.destinations import Destination
from occystrap.pipeline import keeps_fetched
from occystrap.reference import parse_location


def _dest(uri: str) -> Destination:
    return Destination(parse_location(uri, role="destination"), "tok")


def test_an_oci_layout_beside_its_spool_keeps_the_files(tmp_path: Path) -> None:
    (tmp_path / "layout").mkdir()
    (tmp_path / "spool").mkdir()
    assert keeps_fetched(_dest(f"oci://{tmp_path}/layout"), Config(), str(tmp_path / "spool"))


@pytest.mark.parametrize(
    ("uri", "config"),
    [
        ("oci://{tmp}/layout", Config(compression="zstd")),  # compress writes new blobs
        ("dir://{tmp}/layout", Config()),  # compress writes the uncompressed layers
        ("tar://{tmp}/out.tar", Config()),  # regions: download.py advises those itself
        ("registry://127.0.0.1:5000/a:1", Config()),  # spool files are thrown away
    ],
)
def test_other_destinations_do_not(tmp_path: Path, uri: str, config: Config) -> None:
    (tmp_path / "layout").mkdir()
    (tmp_path / "spool").mkdir()
    dest = _dest(uri.format(tmp=tmp_path))
    assert not keeps_fetched(dest, config, str(tmp_path / "spool"))


def test_a_spool_on_another_file_system_is_copied_from(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir() or Path("/dev/shm").stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system at /dev/shm here")
    (tmp_path / "layout").mkdir()
    assert not keeps_fetched(_dest(f"oci://{tmp_path}/layout"), Config(), "/dev/shm")
