"""The per-image part of the `--stats text` report: every image of a small run, a summary
of a big one (a bulk mirror of 1,000 images would otherwise print 1,000 rows). The JSON
document and `--stats-file` always keep every image."""

from __future__ import annotations

from collections import Counter
from typing import Any

#: up to this many images, each gets a row; above it, the summary
MAX_ROWS = 20
#: the slowest images listed in the summary
SLOWEST = 5


def _row(im: dict[str, Any]) -> str:
    return (
        f"{im['result']:<10} {im['seconds']:>8.2f} {im.get('bytes', 0) / 1e6:>9.1f} "
        f"{im.get('layers', 0):>6} {im.get('skipped_layers', 0):>7}  {im['source']}"
    )


def image_lines(images: list[dict[str, Any]]) -> list[str]:
    """Lines for `images` (the document's `image_results`: result, seconds, bytes, layers,
    skipped_layers, source); nothing for a run of one image."""
    if len(images) <= 1:
        return []
    header = f"{'result':<10} {'seconds':>8} {'MB':>9} {'layers':>6} {'skipped':>7}  image"
    if len(images) <= MAX_ROWS:
        return ["", header, *(_row(im) for im in images)]
    import statistics  # noqa: PLC0415 - with fractions, 2 ms of every run's start-up otherwise

    seconds = sorted(im["seconds"] for im in images)
    counts = Counter(im["result"] for im in images)
    slowest = sorted(images, key=lambda im: im["seconds"], reverse=True)[:SLOWEST]
    failed = [im for im in images if im["result"] == "failed" and im not in slowest]
    shown = slowest + failed
    return [
        "",
        f"images: {len(images)} ("
        + ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))
        + f"); seconds each: median {statistics.median(seconds):.2f}, "
        f"p90 {seconds[int(0.9 * (len(seconds) - 1))]:.2f}, max {seconds[-1]:.2f}",
        f"the {len(slowest)} slowest" + (" and every failed one" if failed else "") + ":",
        header,
        *(_row(im) for im in shown),
        f"({len(images) - len(shown)} more: --stats json or --stats-file lists every image)",
    ]
