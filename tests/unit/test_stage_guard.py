"""A bug in a stage's worker thread fails the image and then the stage, never silently."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from occystrap.channel import open_channel
from occystrap.messages import ImageFailed, LayerDesc
from occystrap.stages.base import Stage, Wiring


def test_guard_fails_the_image_and_raises_at_the_end(tmp_path):
    ctx = mp.get_context("fork")
    (out, received), (control, _) = open_channel(ctx, 8), open_channel(ctx, None)
    io = Stage(Wiring("compress", None, out, control))
    spool = tmp_path / "layer"
    spool.write_bytes(b"x")
    layer = LayerDesc(
        image_id=7,
        index=0,
        digest="sha256:" + "a" * 64,
        size=1,
        media_type="m",
        compression="gzip",
        path=str(spool),
    )

    def buggy(la: LayerDesc) -> None:
        raise KeyError(la.image_id)

    io.guard(buggy, layer)
    failed = received.receive()
    assert isinstance(failed, ImageFailed) and failed.image_id == 7
    assert "internal error in the compress stage: KeyError" in failed.reason
    assert failed.kind == "KeyError"
    assert not spool.exists()  # its spool file went with it
    with pytest.raises(KeyError):
        io.raise_crashed()
    io.guard(lambda la: None, layer)  # no bug: nothing happens
