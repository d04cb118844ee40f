"""Turn an `occystrap --stats-file` JSON (schema occystrap.stats/2) into a PNG chart of each
stage's MB/s over time, for the docs and for eyeballing where a run stalled.

    python -m tools.stats_chart stats.json chart.png

Uses matplotlib when it is installed (`pip install occystrap[chart]`); without it, draws a
plain chart itself (lines and axes, no text) with zlib, so the tool always works.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib

STAGES = ("fetch", "verify", "compress", "write")  # resolve moves no layer bytes
COLOURS = {
    "fetch": (31, 119, 180),
    "verify": (255, 127, 14),
    "compress": (44, 160, 44),
    "write": (214, 39, 40),
}


def load_series(path: str) -> tuple[list[float], dict[str, list[float]]]:
    """(times, MB/s per stage) from a stats file; refuses other schemas with a clear error."""
    with open(path) as f:
        doc = json.load(f)
    if doc.get("schema") != "occystrap.stats/2":
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected occystrap.stats/2")
    rows = doc.get("series") or []
    times = [float(r["t"]) for r in rows]
    rates = {s: [float(r["stages"].get(s, {}).get("mb_s", 0.0)) for r in rows] for s in STAGES}
    return times, rates


def _matplotlib_chart(times: list[float], rates: dict[str, list[float]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for stage, values in rates.items():
        ax.plot(
            [0.0, *times],
            [values[0] if values else 0.0, *values],
            label=stage,
            drawstyle="steps-pre",
            color=[c / 255 for c in COLOURS[stage]],
        )
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB/s")
    ax.set_title("occystrap: MB/s per stage")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _plain_chart(
    times: list[float], rates: dict[str, list[float]], out: str, width: int = 800, height: int = 400
) -> None:
    """A white canvas, grey axes, one coloured polyline per stage, written as a PNG."""
    pixels = [[(255, 255, 255)] * width for _ in range(height)]
    margin = 30
    t_max = max(times, default=1.0) or 1.0
    y_max = max((v for vals in rates.values() for v in vals), default=1.0) or 1.0

    def point(t: float, v: float) -> tuple[int, int]:
        x = margin + int((width - 2 * margin) * t / t_max)
        y = height - margin - int((height - 2 * margin) * v / y_max)
        return x, y

    def line(a: tuple[int, int], b: tuple[int, int], colour: tuple[int, int, int]) -> None:
        steps = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for i in range(steps + 1):
            x = a[0] + (b[0] - a[0]) * i // steps
            y = a[1] + (b[1] - a[1]) * i // steps
            for dy in (0, 1):
                if 0 <= x < width and 0 <= y + dy < height:
                    pixels[y + dy][x] = colour

    grey = (120, 120, 120)
    line((margin, height - margin), (width - margin, height - margin), grey)
    line((margin, margin), (margin, height - margin), grey)
    for stage, values in rates.items():
        pts = [point(t, v) for t, v in zip(times, values, strict=True)]
        for a, b in zip(pts, pts[1:], strict=False):
            line(a, b, COLOURS[stage])
    raw = b"".join(b"\0" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    with open(out, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def chart(path: str, out: str, plain: bool = False) -> str:
    """Draw the chart; returns which renderer drew it."""
    times, rates = load_series(path)
    if not plain:
        try:
            _matplotlib_chart(times, rates, out)
            return "matplotlib"
        except ImportError:
            pass
    _plain_chart(times, rates, out)
    return "plain"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    plain = "--plain" in args
    args = [a for a in args if a != "--plain"]
    if len(args) != 2:
        print("usage: python -m tools.stats_chart [--plain] STATS.json OUT.png", file=sys.stderr)
        return 2
    try:
        how = chart(args[0], args[1], plain)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"stats_chart: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args[1]} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
