"""What the supervisor samples while a run goes on: memory and I/O of every stage process,
the channels' depths, and once a second a row of the time series.

Memory is sampled by the supervisor (PSS where the kernel offers smaps_rollup, else RSS), so
a stage that dies still has its peak on record. Channel figures come from
`ChannelStatistics` (channel.py), the one home of queue accounting; the running byte counts
from the shared array the stages write (stages/accounting.py). Sampling is a handful of
/proc reads and semaphore peeks every ~50 ms; PSS, the costly one, only when RSS moved
(`MemorySampler`).

psutil is imported when the sampler is made, after the stages forked: no stage needs it, and
importing it before the fork put ~7 ms on the way to a run's first request. A run that
reports its statistics imports it before the fork all the same (stages/prefork.py), so that
the first sample comes at once and sees every stage, however short the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from occystrap.channel import ChannelStatistics

if TYPE_CHECKING:
    import psutil


class HasStatistics(Protocol):
    """Either end of a channel."""

    def statistics(self) -> ChannelStatistics: ...


#: RSS change (bytes) since a process's last PSS reading that calls for a new one; below
#: it, the PSS is the last reading moved by the RSS change (new pages are private ones)
PSS_DRIFT = 1 << 20
#: seconds after which a PSS reading is renewed anyway (a sibling's exit changes sharing)
PSS_MAX_AGE = 1.0


class MemorySampler:
    """Peak RSS and PSS per process (`supervisor` and each stage), and the peak of their
    PSS sum at one sample (`peak_total`), in bytes.

    RSS is read at every sample (/proc/PID/statm, ~15 µs). PSS needs smaps_rollup, for
    which the kernel walks the process's page tables: 0.1 ms for an idle stage, 1.5 ms for
    a busy one (measured in a 100-image mirror: 0.6 s of the supervisor's CPU in 4.7 s,
    on two cores). It is read again only when the RSS moved by `PSS_DRIFT` or the last
    reading is `PSS_MAX_AGE` old; in between it is estimated from the RSS change, so a
    peak is off by less than `PSS_DRIFT` per process.
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        import psutil  # noqa: PLC0415 - after the fork (module docstring)

        self._psutil = psutil
        self._procs: dict[str, psutil.Process] = {}
        for name, pid in {"supervisor": os.getpid(), **pids}.items():
            try:
                self._procs[name] = psutil.Process(pid)
            except psutil.Error:
                pass
        self.peaks: dict[str, dict[str, int]] = {name: {"rss": 0, "pss": 0} for name in self._procs}
        self.peak_total = 0
        self.last_total = 0
        self._pss: dict[str, tuple[int, int, float]] = {}  # name → (PSS, RSS then, when)

    def sample(self) -> None:
        total = 0
        now = time.monotonic()
        for name, proc in list(self._procs.items()):
            try:
                rss = proc.memory_info().rss
                last = self._pss.get(name)
                if last is None or abs(rss - last[1]) >= PSS_DRIFT or now - last[2] >= PSS_MAX_AGE:
                    info = proc.memory_full_info()
                    rss = info.rss
                    pss = getattr(info, "pss", rss)
                    self._pss[name] = (pss, rss, now)
                else:
                    pss = max(last[0] + rss - last[1], 0)
            except self._psutil.Error:
                self._procs.pop(name)
                self._pss.pop(name, None)
                continue
            peak = self.peaks[name]
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss)
            total += pss
        self.peak_total = max(self.peak_total, total)
        self.last_total = total


class QueueStats:
    """Occupancy of one bounded channel, from the supervisor's samples of its depth.

    A queue that sits full says its consumer is the slow one; one that sits empty says its
    producer is. The mean and the share of samples at either end are what the verdict uses.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.peak = 0
        self.total = 0
        self.samples = 0
        self.full = 0
        self.empty = 0
        self.last = 0

    def add(self, depth: int) -> None:
        self.last = depth
        self.peak = max(self.peak, depth)
        self.total += depth
        self.samples += 1
        self.full += depth >= self.capacity
        self.empty += depth == 0

    def to_dict(self) -> dict[str, Any]:
        n = max(self.samples, 1)
        return {
            "capacity": self.capacity,
            "peak": self.peak,
            "mean": round(self.total / n, 2),
            "full_fraction": round(self.full / n, 3),
            "empty_fraction": round(self.empty / n, 3),
            "samples": self.samples,
        }


class Sampler(MemorySampler):
    """Everything the supervisor samples: memory and I/O per process, channel depths, and
    once every `interval` seconds a row of the series (bytes each stage moved in that
    window, the deepest each channel was, the tree's PSS).

    `channels`: name ("fetch>verify") → an end of that channel. `moved`: the stages' shared
    running byte counts, in `stages` order.
    """

    def __init__(
        self,
        pids: Mapping[str, int],
        channels: Mapping[str, HasStatistics] | None = None,
        moved: Any = None,
        stages: Sequence[str] = (),
        interval: float = 1.0,
    ) -> None:
        super().__init__(pids)
        self._channels = dict(channels or {})
        self.queue_stats = {
            name: QueueStats(ch.statistics().capacity or 0) for name, ch in self._channels.items()
        }
        self._moved = moved
        self._stages = tuple(stages)
        self._interval = interval
        self.started = time.monotonic()
        self._next = self.started + interval
        self._last_moved = [0] * len(self._stages)
        self._last_io: dict[str, tuple[int, int]] = {}
        self.io: dict[str, tuple[int, int]] = {}  # stage → (read_chars, write_chars), last seen
        self.series: list[dict[str, Any]] = []
        self._window_peak: dict[str, int] = {}

    def sample(self) -> None:
        super().sample()
        for name, channel in self._channels.items():
            depth = channel.statistics().depth
            self.queue_stats[name].add(depth)
            self._window_peak[name] = max(self._window_peak.get(name, 0), depth)
        for name, proc in self._procs.items():
            if name == "supervisor":
                continue
            try:
                io = proc.io_counters()
            except (self._psutil.Error, AttributeError, NotImplementedError):
                continue
            self.io[name] = (
                getattr(io, "read_chars", io.read_bytes),
                getattr(io, "write_chars", io.write_bytes),
            )
        now = time.monotonic()
        if now >= self._next:
            self.row(now)

    def row(self, now: float | None = None) -> None:
        """Close the current window of the series (also called once at the end)."""
        now = time.monotonic() if now is None else now
        span = now - (self._next - self._interval)
        if span <= 0.01:
            return
        stages: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(self._stages):
            total = int(self._moved[i]) if self._moved is not None else 0
            delta, self._last_moved[i] = total - self._last_moved[i], total
            rd, wr = self.io.get(name, (0, 0))
            lrd, lwr = self._last_io.get(name, (0, 0))
            self._last_io[name] = (rd, wr)
            stages[name] = {
                "bytes": delta,
                "mb_s": round(delta / 1e6 / span, 2),
                "io_read": max(rd - lrd, 0),
                "io_write": max(wr - lwr, 0),
            }
        self.series.append(
            {
                "t": round(now - self.started, 2),
                "seconds": round(span, 3),
                "stages": stages,
                "queues": {name: self._window_peak.get(name, 0) for name in self._channels},
                "pss_total": self.last_total,
            }
        )
        self._window_peak = {}
        self._next = now + self._interval

    def queues(self) -> dict[str, dict[str, Any]]:
        """Each channel's summary for the stats document: the sampled occupancy, and from
        its statistics the messages through it and the time its two ends waited on it."""
        out = {}
        for name, channel in self._channels.items():
            st = channel.statistics()
            out[name] = {
                **self.queue_stats[name].to_dict(),
                "messages": st.sent,
                "blocked_seconds": round(st.blocked_seconds, 3),
                "waiting_seconds": round(st.waiting_seconds, 3),
            }
        return out
