"""Run one command and measure it the way the benchmarks report it.

Shared by ``python -m bench`` and ``tools/benchmark.sh`` so that both quote the same numbers:
wall time, exit code, the peak sum of PSS over the whole process tree (our pipeline is six
processes sharing pages, so summing RSS would count the shared pages six times), and the peak
RSS of the largest single process (what a peer's single-process memory is usually quoted as).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

import psutil

SAMPLE_SECONDS = 0.02


@dataclass
class RunResult:
    """One timed run of one command."""

    wall: float
    exit_code: int
    peak_pss: int  # bytes: largest sum of PSS over the process tree at one sample
    peak_rss: int  # bytes: largest RSS of any single process of the tree
    stderr: str


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(sum of PSS, largest RSS) over ``proc`` and its descendants, right now.

    Processes can vanish between listing and reading; they are skipped, not fatal.
    """
    total = 0
    largest = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        total += getattr(info, "pss", info.rss)
        largest = max(largest, info.rss)
    return total, largest


def run_measured(
    cmd: list[str], *, timeout: float = 3600.0, env: dict[str, str] | None = None
) -> RunResult:
    """Run ``cmd`` to completion, sampling the tree's memory every 20 ms.

    stdout is discarded (tools print progress there and terminals are slow); stderr is kept
    so a failure can be explained. A run past ``timeout`` is killed and reported as exit 124.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    ps = psutil.Process(proc.pid)
    peak_pss = peak_rss = 0
    # A full stderr pipe would stall the child (occystrap 0.4.17 logs every step there), so
    # a thread drains it while the main thread samples memory.
    chunks: list[bytes] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            chunks.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    code: int | None = None
    while (code := proc.poll()) is None:
        pss, rss = tree_memory(ps)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        if time.monotonic() - t0 > timeout:
            proc.kill()
            proc.wait()
            code = 124
            break
        time.sleep(SAMPLE_SECONDS)
    wall = time.monotonic() - t0
    reader.join(timeout=5)
    err = b"".join(chunks).decode(errors="replace")
    return RunResult(wall, code, peak_pss, peak_rss, err[-2000:])


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.measure -- CMD...``: print one RunResult as JSON (for shell scripts)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: python -m bench.measure -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    result = run_measured(args)
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
