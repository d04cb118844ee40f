"""What a run came to: the images copied and failed, how it ended, and what it measured.

`RunResult` is built by the supervisor (pipeline.py) and read by the reports (cli/report.py,
stats/schema.py); `merge` makes one result of the several runs of a --from-file spec that
names several destinations. Live state kept only while the run goes on (per-image progress,
when each image was first seen) is the supervisor's, not here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

from occystrap.messages import ImageDone, ImageFailed, Notice, SearchHits, StageReport


class RunResult(msgspec.Struct):
    """One run's outcome. Times are seconds, sizes bytes.

    `error`: why the run stopped before its end (a crash, Ctrl-C, --fail-fast), one line
    (a bug's traceback on the lines after it); None when it ran to the end. `interrupted`
    and `terminated`: it was stopped by SIGINT or SIGTERM. The measurements (`reports`,
    `memory`, `peak_pss_total`, `queues`, `series`) are what stats/schema.py reports.
    """

    done: list[ImageDone] = msgspec.field(default_factory=list)
    failed: list[ImageFailed] = msgspec.field(default_factory=list)
    error: str | None = None
    interrupted: bool = False
    terminated: bool = False
    wall_seconds: float = 0.0
    sources: int = 0  # source URIs given (a bulk source counts once)
    image_seconds: dict[int, float] = msgspec.field(default_factory=dict)  # image id → its time
    # the search filters' matches
    search_hits: list[SearchHits] = msgspec.field(default_factory=list)
    notices: list[Notice] = msgspec.field(default_factory=list)  # about the sources, for -v
    # measured: each stage's report, peak memory per process (rss, pss), the channels'
    # summaries and the per-second series (stats/sampler.py)
    reports: dict[str, StageReport] = msgspec.field(default_factory=dict)
    memory: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    peak_pss_total: int = 0
    queues: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    series: list[dict[str, Any]] = msgspec.field(default_factory=list)

    def failures_by_kind(self) -> dict[str, int]:
        """The error's class name → images failed with it, by name."""
        return dict(sorted(Counter(f.kind for f in self.failed).items()))


def merge(results: Sequence[RunResult]) -> RunResult:
    """One result for several runs, in order: images and notices added up, wall times
    summed, the first error kept, interrupted or terminated if any was; the measurements
    are the last run's (each run has its own stages)."""
    if len(results) == 1:
        return results[0]
    merged = RunResult()
    for r in results:
        merged.done += r.done
        merged.failed += r.failed
        merged.wall_seconds += r.wall_seconds
        merged.peak_pss_total = max(merged.peak_pss_total, r.peak_pss_total)
        merged.error = merged.error or r.error
        merged.interrupted = merged.interrupted or r.interrupted
        merged.terminated = merged.terminated or r.terminated
        merged.reports, merged.memory = r.reports, r.memory
        merged.queues, merged.series = r.queues, r.series
        merged.image_seconds.update(r.image_seconds)
        merged.search_hits += r.search_hits
        merged.notices += r.notices
        merged.sources += r.sources
    return merged
