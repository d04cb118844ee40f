"""The live progress display on a terminal (stderr a TTY, not --quiet): a line per image
being fetched and one overall line (images finished, bytes done/total, rate, ETA), redrawn in
place a few times a second from the supervisor's `Live` view (pipeline.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol, TextIO

from occystrap.messages import ImageDone, ImageFailed, Progress
from occystrap.stats.schema import human_bytes


class RunView(Protocol):
    """What the display reads: fetch's latest Progress per image and the outcomes so far."""

    @property
    def progress(self) -> Mapping[int, Progress]: ...

    @property
    def done(self) -> Sequence[ImageDone]: ...

    @property
    def failed(self) -> Sequence[ImageFailed]: ...

    @property
    def sources(self) -> int: ...

    @property
    def image_seconds(self) -> Mapping[int, float]: ...


class ProgressDisplay:
    """Live progress on a terminal: a line per image being fetched and one overall line
    (bytes done/total, rate, ETA), redrawn in place a few times a second.

    The supervisor calls `update` every loop; redrawing is rate-limited here, and `clear`
    erases the block so other output (an image's result line) can be printed cleanly.
    """

    MAX_IMAGES = 6

    def __init__(self, stream: TextIO, interval: float = 0.2, width: int = 100) -> None:
        self.stream = stream
        self.interval = interval
        self.width = width
        self._drawn = 0
        self._last = 0.0
        self._history: list[tuple[float, int]] = []

    def clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self.stream.flush()
            self._drawn = 0

    def lines(self, result: RunView, now: float) -> list[str]:
        done = total = 0
        active = []
        finished = result.image_seconds
        for image_id, p in result.progress.items():
            done += p.done
            total += p.total
            if image_id not in finished and (p.done < p.total or p.layers_done < p.layers):
                active.append(p)
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[0][0] > 3.0:
            self._history.pop(0)
        t0, d0 = self._history[0]
        rate = (done - d0) / (now - t0) if now - t0 > 0.2 else 0.0
        out = []
        for p in active[: self.MAX_IMAGES]:
            pct = p.done * 100 // p.total if p.total else 0
            label = p.source if len(p.source) <= 48 else "…" + p.source[-47:]
            out.append(
                f"  {label:<48} {human_bytes(p.done):>9} / {human_bytes(p.total):<9} "
                f"{pct:>3}%  {p.layers_done}/{p.layers} layers"
            )
        if len(active) > self.MAX_IMAGES:
            out.append(f"  … and {len(active) - self.MAX_IMAGES} more")
        finished_n = len(result.done) + len(result.failed)
        of = f"/{result.sources}" if result.sources >= finished_n else ""
        eta = f", ETA {(total - done) / rate:.0f} s" if rate > 0 and total > done else ""
        out.append(
            f"{finished_n}{of} images, {human_bytes(done)} / {human_bytes(total)}, "
            f"{human_bytes(rate)}/s{eta}"
        )
        return [line[: self.width] for line in out]

    def update(self, result: RunView, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = self.lines(result, now)
        self.clear()
        self.stream.write("\n".join(text) + "\n")
        self.stream.flush()
        self._drawn = len(text)
