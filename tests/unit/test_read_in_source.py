"""compress.read_in_source: which layers go from fetch to compress read where they lie in
the source's file (issue 17's tar2reg), and which are copied into the spool first."""

from __future__ import annotations

from occystrap.messages import LayerDesc
from occystrap.stages.compress import read_in_source

D = "sha256:" + "a" * 64


def _layer(**kw: object) -> LayerDesc:
    base: dict[str, object] = {
        "image_id": 1,
        "index": 0,
        "digest": D,
        "size": 10,
        "media_type": "application/vnd.oci.image.layer.v1.tar",
        "compression": "none",
        "diff_id": D,
        "local_path": "/src/app.tar",
        "local_offset": 512,
    }
    base.update(kw)
    return LayerDesc(**base)  # type: ignore[arg-type]


def test_a_plain_member_of_the_users_archive_when_the_run_only_recodes() -> None:
    assert read_in_source(_layer(), True)


def test_refused_otherwise() -> None:
    assert not read_in_source(_layer(), False)  # filters, or an uncompressed destination
    assert not read_in_source(_layer(local_owned=True), True)  # our own spool copy
    assert not read_in_source(_layer(offset=0), True)  # a region of a tarball being written
    assert not read_in_source(_layer(compression="gzip"), True)  # its digest is not checked
    assert not read_in_source(_layer(diff_id=None), True)  # nothing to check it against
    assert not read_in_source(_layer(diff_id="sha256:" + "b" * 64), True)
    assert not read_in_source(_layer(local_path=""), True)  # a registry's
