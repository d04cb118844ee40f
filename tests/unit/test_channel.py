"""channel.py: the end of a stream, the statistics every process reads, and backpressure."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import pytest

from occystrap.channel import ClosedChannel, EndOfChannel, Sender, open_channel
from occystrap.messages import ImageFailed, Notice

CTX = mp.get_context("fork")


def _msg(i: int) -> ImageFailed:
    return ImageFailed(image_id=i, source=f"s{i}", stage="fetch", reason="r", kind="ImageError")


def _send_from_a_child(tx: Sender, ids: list[int]) -> int:
    """Fork a process that sends `ids` and closes its end (a process sends or receives)."""
    pid = os.fork()
    if pid == 0:
        for i in ids:
            tx.send(_msg(i))
        tx.close()
        tx.close()  # a second close does nothing
        try:
            tx.send(_msg(99))
        except ClosedChannel:
            os._exit(0)
        os._exit(1)
    return pid


def _exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_close_ends_the_stream_and_iteration_stops() -> None:
    tx, rx = open_channel(CTX, 8)
    pid = _send_from_a_child(tx, [0, 1, 2])
    assert [m.image_id for m in rx] == [0, 1, 2]  # type: ignore[union-attr]
    assert _exit_code(pid) == 0  # and send after close raised ClosedChannel
    assert rx.ended
    with pytest.raises(EndOfChannel):
        rx.receive()
    assert rx.poll(0.01) is None


def test_the_stream_ends_when_every_sender_has_closed() -> None:
    """Two sending processes: the receiver reads both streams whole, then sees the end."""
    tx, rx = open_channel(CTX, 4, senders=2)
    pids = [_send_from_a_child(tx, [base + i for i in range(5)]) for base in (0, 100)]
    got = sorted(m.image_id for m in rx)  # type: ignore[union-attr]
    assert [_exit_code(pid) for pid in pids] == [0, 0]
    assert got == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    st = rx.statistics()
    assert (st.sent, st.received, st.open_senders) == (10, 10, 0)


def test_statistics_count_each_end_and_the_depth() -> None:
    tx, rx = open_channel(CTX, 5)
    st = tx.statistics()
    assert (st.capacity, st.depth, st.sent, st.received, st.open_senders) == (5, 0, 0, 0, 1)
    for i in range(3):
        tx.send(_msg(i))
    rx.receive()
    st = rx.statistics()
    assert (st.depth, st.sent, st.received) == (2, 3, 1)
    unbounded, _ = open_channel(CTX, None)
    assert unbounded.statistics().capacity is None


def test_a_full_channel_blocks_the_sender_and_says_for_how_long() -> None:
    tx, rx = open_channel(CTX, 1)
    tx.send(_msg(0))

    def read_later() -> None:
        time.sleep(0.3)
        rx.receive()

    reader = threading.Thread(target=read_later)
    reader.start()
    tx.send(_msg(1))  # blocks until the reader has taken the first
    reader.join()
    assert tx.statistics().blocked_seconds >= 0.2
    assert rx.receive().image_id == 1  # type: ignore[union-attr]


def test_an_empty_channel_makes_the_receiver_wait_and_says_for_how_long() -> None:
    tx, rx = open_channel(CTX, 4)
    threading.Timer(0.3, lambda: tx.send(Notice(text="late"))).start()
    assert rx.receive() == Notice(text="late")
    st = rx.statistics()
    assert st.waiting_seconds >= 0.2 and st.blocked_seconds < 0.2
    with pytest.raises(TimeoutError):
        rx.receive(timeout=0.05)
    assert rx.poll(0.05) is None


def test_the_supervisor_reads_what_a_child_counted() -> None:
    """The counters are shared memory: a forked sender's figures reach the parent."""
    tx, rx = open_channel(CTX, 8)
    pid = _send_from_a_child(tx, [1, 2])
    assert [m.image_id for m in rx] == [1, 2]  # type: ignore[union-attr]
    assert _exit_code(pid) == 0
    st = rx.statistics()
    assert (st.sent, st.received, st.open_senders) == (2, 2, 0)
    assert rx.wait_handle() is not None


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity 0"):
        open_channel(CTX, 0)
