"""A bug in a stage's worker thread fails the image and then the stage, never silently."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from occystrap.messages import ImageFailed, LayerDesc, decode
from occystrap.stages.base import StageIO


def test_guard_fails_the_image_and_raises_at_the_end(tmp_path):
    ctx = mp.get_context("fork")
    out, control = ctx.Queue(), ctx.Queue()
    io = StageIO("compress", None, out, control)
    spool = tmp_path / "layer"
    spool.write_bytes(b"x")
    layer = LayerDesc(image_id=7, index=0, digest="sha256:" + "a" * 64, size=1,
                      media_type="m", compression="gzip", path=str(spool))

    def buggy(la: LayerDesc) -> None:
        raise KeyError(la.image_id)

    io.guard(buggy, layer)
    failed = decode(out.get(timeout=5))
    assert isinstance(failed, ImageFailed) and failed.image_id == 7
    assert "internal error in the compress stage: KeyError" in failed.reason
    assert not spool.exists()  # its spool file went with it
    with pytest.raises(KeyError):
        io.raise_crashed()
    io.guard(lambda la: None, layer)  # no bug: nothing happens
