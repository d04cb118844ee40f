"""stages/failures.py: the ring of failed image ids that stages before the failing one read."""

from __future__ import annotations

import multiprocessing as mp
import os

from occystrap.stages.failures import FailedImages

CTX = mp.get_context("fork")


def test_each_process_reads_what_is_new_to_it() -> None:
    ring = FailedImages(CTX)
    assert ring.news() == []
    ring.post(3)
    pid = os.fork()
    if pid == 0:  # a later stage posts; the parent reads it
        ring.post(7)
        os._exit(0 if ring.news() == [3, 7] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # the child's own cursor saw both
    assert ring.news() == [3, 7]
    assert ring.news() == []


def test_a_reader_that_falls_behind_gets_the_latest() -> None:
    """More posts than the ring holds between two reads: the oldest are lost (advisory:
    the stages after the failing one drop those images anyway)."""
    ring = FailedImages(CTX)
    for image_id in range(FailedImages.SIZE + 5):
        ring.post(image_id)
    got = ring.news()
    assert got == list(range(5, FailedImages.SIZE + 5))
