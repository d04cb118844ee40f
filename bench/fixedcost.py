"""The fixed cost of a run (issue 16): what a copy pays whatever it copies.

- ``version``, ``help``: wall time of ``--version`` and ``--help`` (start-up and imports alone);
- ``oci``: the small image registry → ``oci://``; ``noop``: its re-run into a registry that
  already holds it. For both, through a relaying proxy (bench/wanproxy.py, no delay, no cap)
  in front of each registry: **start → first request** (the proxy's first client byte, less
  the moment before the harness spawned the command: CLOCK_MONOTONIC in both processes) and
  **last byte → exit** (``oci``: the newest mtime in the output directory, a file system clock
  of a few ms resolution; ``noop``: the last byte the proxies relayed either way), to the
  moment ``wait()`` returned for the command's process.

Every tool that can do a workflow is measured the same way; runs are interleaved, and there
are at least `MIN_RUNS` of them whatever ``--runs`` says: each takes well under a second, and
figures of 50–250 ms vary by ±20–30 ms from one run to the next on this machine (a busy
neighbour, a writeback), so the median of three is left to chance.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time

from bench.specs import Inputs, command, tool_env
from bench.wanproxy import WanProxy
from tools.testregistry import TestRegistry

#: the fewest timed rounds of the fixed costs (module docstring)
MIN_RUNS = 9


def _spawn(cmd: list[str], env: dict[str, str] | None) -> tuple[float, float, float, int, str]:
    """Run ``cmd``: (monotonic start, monotonic exit, realtime exit, exit code, stderr tail).

    stderr goes to a file, not a pipe, so that the exit is the main process's, as a shell
    sees it, not the moment the last child closed an inherited descriptor.
    """
    with open(os.devnull, "wb") as null, tempfile.TemporaryFile() as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=null, stderr=log, env=env)
        code = proc.wait()
        t_exit, real_exit = time.monotonic(), time.time()
        log.seek(0)
        err = log.read()[-1000:].decode(errors="replace")
    return t0, t_exit, real_exit, code, err


def newest_mtime(top: str) -> float:
    """The newest modification time (seconds since the epoch) of anything under ``top``."""
    newest = os.stat(top).st_mtime_ns
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(base, name)).st_mtime_ns)
            except OSError:
                continue
    return newest / 1e9


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(raw: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, object]:
    """Medians (and min, max) of every measure, per workflow and tool."""
    out: dict[str, object] = {}
    for wf, tools in raw.items():
        out[wf] = {
            t: {
                k: {
                    "median": _median(v),
                    "min": min(v) if v else None,
                    "max": max(v) if v else None,
                    "runs": v,
                }
                for k, v in measures.items()
            }
            for t, measures in tools.items()
        }
    return out


def measure(
    source: TestRegistry,
    repo: str,
    tools: list[str],
    runs: int,
    warmup: int,
    work: str,
    ours_env: dict[str, str] | None,
) -> dict[str, object]:
    """Every fixed-cost measure for ``tools`` against ``repo``:1.0 in ``source``, over
    ``max(runs, MIN_RUNS)`` timed rounds after ``warmup`` untimed ones."""
    runs = max(runs, MIN_RUNS)
    raw: dict[str, dict[str, dict[str, list[float]]]] = {}
    base = os.path.join(work, "fixed")
    os.makedirs(base, exist_ok=True)
    dest = TestRegistry().start()
    src_ev, dst_ev = os.path.join(base, "src.events"), os.path.join(base, "dest.events")
    proxies = [
        WanProxy(source.host, delay_ms=0, rate_mb_s=0, events=src_ev).start(),
        WanProxy(dest.host, delay_ms=0, rate_mb_s=0, events=dst_ev).start(),
    ]
    try:
        out = os.path.join(base, "out")
        inp = Inputs(src=f"{proxies[0].host}/{repo}:1.0", out=out)
        plans: list[tuple[str, str, list[str]]] = []
        for tool in tools:
            env = tool_env(tool, inp, ours_env)
            binary = (command(tool, "registry", inp) or [tool])[0]
            plans += [("version", tool, [binary, "--version"]), ("help", tool, [binary, "--help"])]
            for wf in ("oci", "noop"):
                cmd = command(tool, wf, inp, dest=f"{proxies[1].host}/fixed/{tool}:1.0")
                if cmd is not None:
                    plans.append((wf, tool, cmd))
            prime = command(tool, "registry", inp, dest=f"{dest.host}/fixed/{tool}:1.0")
            if prime is not None:  # the re-run's registry already holds the image
                subprocess.run(prime, check=True, env=env, capture_output=True)
        for i in range(warmup + runs):
            for wf, tool, cmd in plans:
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                for p in proxies:
                    p.reset_events()
                t0, t_exit, real_exit, code, err = _spawn(cmd, tool_env(tool, inp, ours_env))
                if code != 0 and wf not in ("version", "help"):
                    print(f"   fixed {wf} {tool}: FAILED ({code}): {err.strip()[-300:]}")
                    continue
                if i < warmup:
                    continue
                got = raw.setdefault(wf, {}).setdefault(tool, {})
                got.setdefault("wall", []).append(t_exit - t0)
                if wf in ("oci", "noop"):
                    events = [e for p in proxies for e in p.read_events()]
                    if events:
                        got.setdefault("first_request", []).append(min(e[0] for e in events) - t0)
                    if wf == "oci":
                        got.setdefault("last_to_exit", []).append(real_exit - newest_mtime(out))
                    elif events:
                        got.setdefault("last_to_exit", []).append(
                            t_exit - max(e[1] for e in events)
                        )
            print(f"   fixed costs: round {i + 1}/{warmup + runs}", flush=True)
    finally:
        for p in proxies:
            p.stop()
        dest.stop()
        shutil.rmtree(base, ignore_errors=True)
    return summarise(raw)
