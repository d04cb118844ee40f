"""Channels between the pipeline's processes, on the contract of trio's memory channels.

    send, receive = open_channel(ctx, capacity=64)
    send.send(plan)              # blocks while `capacity` messages wait (backpressure)
    send.close()                 # the end of the stream: no end-of-input message to forget
    for message in receive:      # stops once every sender has closed
        ...
    receive.statistics()         # a frozen ChannelStatistics, from any process

Underneath is one `multiprocessing` queue of msgspec-encoded bytes (`messages.encode`), made
before the stages fork so every process holds both ends; by convention one process sends
(several threads may) and one receives, except for the control channel, whose `senders` are
all the stages. A channel opened for `senders=N` ends for its receiver when N ends have
arrived: each sending process closes its end once.

The accounting lives here and nowhere else: how many messages went in and came out, how long
senders were blocked on a full channel and how long receivers waited on an empty one. The
counters are in shared memory, so the supervisor reads the same figures the stages write,
and a stage's report takes its wait-in and blocked times from its two channels.

Errors: `EndOfChannel` from `receive` once the stream has ended (TimeoutError when a timeout
given to it passes first); `ClosedChannel` from `send` after `close`. A receiver that reads
bytes that are not a message (a sender killed mid-write) gets msgspec.DecodeError from
`receive`; `poll` treats it as nothing received.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from typing import cast

import msgspec

from occystrap import messages
from occystrap.messages import Message

END = b""  # the end marker: no encoded message is empty

# slots of the shared counters (doubles: counts stay exact up to 2**53)
_SENT, _RECEIVED, _BLOCKED, _WAITING, _OPEN = range(5)


class EndOfChannel(Exception):
    """Every sender has closed its end and every message before the ends was received."""


class ClosedChannel(Exception):
    """`send` on an end this process has already closed."""


class ChannelStatistics(msgspec.Struct, frozen=True):
    """One channel's figures at the moment of asking (any process may ask).

    `capacity`: messages it holds before `send` blocks (None: unbounded).
    `depth`: messages in it now, end markers included (0 where the platform cannot say).
    `sent` / `received`: messages through each end so far (end markers not counted).
    `blocked_seconds`: time senders spent in `send` (waiting for room, mostly).
    `waiting_seconds`: time receivers spent in `receive` waiting for a message.
    `open_senders`: sending ends not yet closed.
    """

    capacity: int | None
    depth: int
    sent: int
    received: int
    blocked_seconds: float
    waiting_seconds: float
    open_senders: int


class _State:
    """What both ends share: the queue, the counters and the lock that guards their
    updates (reads take no lock: an aligned double is read whole)."""

    def __init__(self, ctx: BaseContext, capacity: int | None, senders: int) -> None:
        self.capacity = capacity
        self.senders = senders
        self.queue: Queue[bytes] = ctx.Queue(capacity or 0)
        self.counters = ctx.RawArray("d", 5)
        self.counters[_OPEN] = senders
        self.lock = ctx.Lock()

    def add(self, slot: int, seconds: float, count_slot: int | None) -> None:
        with self.lock:
            self.counters[slot] += seconds
            if count_slot is not None:
                self.counters[count_slot] += 1

    def statistics(self) -> ChannelStatistics:
        c = self.counters
        try:
            depth = int(self.queue.qsize())
        except (NotImplementedError, OSError, ValueError):
            depth = 0  # macOS has no sem_getvalue; a closed queue says nothing
        return ChannelStatistics(
            capacity=self.capacity,
            depth=depth,
            sent=int(c[_SENT]),
            received=int(c[_RECEIVED]),
            blocked_seconds=c[_BLOCKED],
            waiting_seconds=c[_WAITING],
            open_senders=int(c[_OPEN]),
        )

    def discard(self) -> None:
        """Let go of this process's handle at once, flushing nothing."""
        self.queue.cancel_join_thread()
        self.queue.close()


class Sender:
    """The sending end. Thread-safe; `close` once per sending process."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self._closed = False

    def send(self, message: Message) -> None:
        """Put `message` in the channel, blocking while it is full. ClosedChannel after
        `close`."""
        if self._closed:
            raise ClosedChannel("send on a closed channel")
        data = messages.encode(message)
        t0 = time.monotonic()
        self._state.queue.put(data)
        self._state.add(_BLOCKED, time.monotonic() - t0, _SENT)

    def close(self) -> None:
        """End the stream from this sender, wait until what it sent has left this process
        (the queue's feeder thread flushes; the process may then exit at once), and let go
        of this process's handle: a process sends or receives on a channel, not both. A
        second call does nothing."""
        if self._closed:
            return
        self._closed = True
        state = self._state
        t0 = time.monotonic()
        state.queue.put(END)
        with state.lock:
            state.counters[_BLOCKED] += time.monotonic() - t0
            state.counters[_OPEN] -= 1
        state.queue.close()
        state.queue.join_thread()

    def statistics(self) -> ChannelStatistics:
        return self._state.statistics()

    def discard(self) -> None:
        """Let go without ending the stream or flushing (the supervisor's copy, at exit)."""
        self._state.discard()


class Receiver:
    """The receiving end, in one process. Iterating it receives until the end."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self._ends_left = state.senders

    def receive(self, timeout: float | None = None) -> Message:
        """The next message, blocking while the channel is empty (at most `timeout` seconds,
        then TimeoutError); EndOfChannel once every sender has closed."""
        while True:
            if self._ends_left <= 0:
                raise EndOfChannel()
            t0 = time.monotonic()
            try:
                data = self._state.queue.get(timeout=timeout)
            except queue.Empty:
                self._state.add(_WAITING, time.monotonic() - t0, None)
                raise TimeoutError(f"no message within {timeout} s") from None
            waited = time.monotonic() - t0
            if data == END:
                self._state.add(_WAITING, waited, None)
                self._ends_left -= 1
                continue
            self._state.add(_WAITING, waited, _RECEIVED)
            return messages.decode(data)

    def poll(self, timeout: float) -> Message | None:
        """A message if one arrives within `timeout` seconds, else None (also at the end,
        and for what a sender killed mid-write left: the supervisor's way to drain). Time
        spent here is not waiting: the supervisor waits on `wait_handle`."""
        while self._ends_left > 0:
            try:
                data = self._state.queue.get(timeout=timeout)
            except Exception:  # queue.Empty; EOF or garbage when a child died mid-put
                return None
            if data == END:
                self._ends_left -= 1
                continue
            self._state.add(_WAITING, 0.0, _RECEIVED)
            try:
                return messages.decode(data)
            except Exception:  # noqa: BLE001 - half a message from a killed sender
                return None
        return None

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.receive()
            except EndOfChannel:
                return

    @property
    def ended(self) -> bool:
        """Every sender's end has been received."""
        return self._ends_left <= 0

    def wait_handle(self) -> Connection | None:
        """What `multiprocessing.connection.wait` can sleep on until a message may be here
        (the queue's pipe), or None where the queue does not expose one. The one place that
        knows CPython's Queue keeps its reading end in `_reader`."""
        return cast("Connection | None", getattr(self._state.queue, "_reader", None))

    def statistics(self) -> ChannelStatistics:
        return self._state.statistics()

    def discard(self) -> None:
        """Let go of this process's handle at once."""
        self._state.discard()


def open_channel(
    ctx: BaseContext, capacity: int | None, senders: int = 1
) -> tuple[Sender, Receiver]:
    """A (Sender, Receiver) pair over a new queue of `ctx` holding up to `capacity` messages
    (None: unbounded). `senders`: how many processes will each close their end; the stream
    ends for the receiver when all have. Make channels before forking the processes that
    use them."""
    if capacity is not None and capacity < 1:
        raise ValueError(f"capacity {capacity}: at least 1, or None for unbounded")
    state = _State(ctx, capacity, senders)
    return Sender(state), Receiver(state)
