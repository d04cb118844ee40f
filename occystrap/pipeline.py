"""The process pipeline: resolve → fetch → verify → compress → write.

    resolve ─Q─► fetch ─Q─► verify ─Q─► compress ─Q─► write
       ▲                                                │
       └── admission semaphore (-J) ◄───────────────────┘   control queue ──► supervisor

Each stage is a forked process (modules imported before the fork share their pages, which
keeps the tree's memory near the floor). Queues are bounded and carry only msgspec-encoded
descriptors. The supervisor (this process) collects outcomes and reports, samples memory,
and on Ctrl-C or a dead stage stops every child, removes temp files and returns.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import shutil
import signal
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from typing import Any
from urllib.parse import urlsplit

from occystrap import messages
from occystrap.config import Config
from occystrap.destination import Destination
from occystrap.errors import DestinationError, OccystrapError, from_library
from occystrap.layercache import LayerCache
from occystrap.messages import (
    ImageDone,
    ImageFailed,
    Notice,
    Progress,
    SearchHits,
    StageCrashed,
    StageReport,
)
from occystrap.reference import Location
from occystrap.registry import credentials, ratelimit
from occystrap.registry.tls import warm_ssl_context
from occystrap.stages import compress, fetch, resolve, verify, write
from occystrap.stages.base import StageIO
from occystrap.stats import Sampler

QUEUE_SIZE = 64
SAMPLE_EVERY = 0.05  # seconds between the supervisor's memory and queue samples
STAGES = ("resolve", "fetch", "verify", "compress", "write")
_PR_SET_PDEATHSIG = 1


@dataclass
class RunResult:
    done: list[ImageDone] = field(default_factory=list)
    failed: list[ImageFailed] = field(default_factory=list)
    reports: dict[str, StageReport] = field(default_factory=dict)
    memory: dict[str, dict[str, int]] = field(default_factory=dict)
    peak_pss_total: int = 0
    wall_seconds: float = 0.0
    error: str | None = None
    interrupted: bool = False
    terminated: bool = False
    # supervisor samples: queue occupancy, the per-second series, live progress per image
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[int, Progress] = field(default_factory=dict)
    search_hits: list[SearchHits] = field(default_factory=list)  # the search filters' matches
    notices: list[Notice] = field(default_factory=list)  # about the sources, for -v
    first_seen: dict[int, float] = field(default_factory=dict)  # image id → monotonic time
    image_seconds: dict[int, float] = field(default_factory=dict)
    sources: int = 0
    started: float = field(default_factory=time.monotonic)


def _child_setup() -> None:
    """Children leave Ctrl-C to the supervisor and die with it if it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _stage_main(name: str, body: Callable[[StageIO], None], inq: Queue[Any] | None,
                outq: Queue[Any] | None, control: Queue[Any], moved: Any = None) -> None:
    _child_setup()
    io = StageIO(name, inq, outq, control, moved=moved, slot=STAGES.index(name),
                 progress=name == "fetch")
    try:
        body(io)
    except Exception as exc:
        mapped = from_library(exc, f"the {name} stage")
        if mapped is not None:  # one line: the input or the machine, not our bug
            io.tell(StageCrashed(stage=name, error=str(mapped), traceback=""))
        else:
            io.tell(StageCrashed(stage=name, error=f"{type(exc).__name__}: {exc}",
                                 traceback=traceback.format_exc()))
        _flush_and_exit(control, 1)
    except BaseException as exc:  # a bug: report it with its traceback
        io.tell(StageCrashed(stage=name, error=f"{type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc()))
        _flush_and_exit(control, 1)
    io.finish()
    # Let the queue feeder threads flush, then leave without running atexit handlers that
    # the parent's modules registered before the fork.
    for q in (outq, control):
        if q is not None:
            q.close()
            q.join_thread()
    os._exit(0)


class Terminated(BaseException):
    """SIGTERM reached the supervisor: stop like Ctrl-C, and say so with exit code 143."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _flush_and_exit(control: Queue[Any], code: int) -> None:
    """Let the control queue's feeder thread deliver the last report, then leave at once."""
    control.close()
    control.join_thread()
    os._exit(code)


def _warm_credentials(sources: Sequence[Location], dest_location: Location,
                      config: Config) -> None:
    """Look up every known registry host's credentials before the stages fork, so they
    inherit the answers and a credential helper runs once per host and run, not once per
    stage process."""
    wanted: set[tuple[str, str | None, str | None]] = set()
    for location in sources:
        host = (location.ref.host if location.ref is not None else
                location.pattern.host if location.pattern is not None else
                urlsplit(config.quay_url).netloc if location.scheme == "quay" else None)
        if host:
            wanted.add((host, *config.credentials("src")))
    if dest_location.ref is not None:
        wanted.add((dest_location.ref.host, *config.credentials("dest")))
    credentials.warm(sorted(wanted, key=lambda w: w[0]), config.authfile,
                     config.credential_helpers)


def run(sources: Sequence[Location], dest_location: Location, config: Config,
        on_event: Callable[[ImageDone | ImageFailed | Notice], None] | None = None,
        on_tick: Callable[[RunResult], None] | None = None) -> RunResult:
    """Copy `sources` to one destination. `on_event` hears each image's outcome as it
    happens; `on_tick` is called every supervisor loop (~10 times a second) with the result
    so far, for a live progress display."""
    ctx = mp.get_context("fork")
    ratelimit.install(config.rate_limit)  # shared memory, before the stages fork
    warm_ssl_context(config.tls_verify, config.ca_file)  # inherited by every stage
    _warm_credentials(sources, dest_location, config)  # helpers run once, here
    token = uuid.uuid4().hex[:12]
    dest = Destination(dest_location, token)
    spool = dest.spool_dir(config.temp_dir)
    result = RunResult(sources=len(sources))
    started = result.started

    writer = dest.open_writer(config, spool)  # fails early on an unwritable destination
    try:
        os.makedirs(spool, exist_ok=True)
    except OSError as exc:
        writer.close(False)
        raise DestinationError(f"cannot create spool directory {spool}: {exc.strerror}") from None

    queues = [ctx.Queue(QUEUE_SIZE) for _ in range(len(STAGES) - 1)]
    control: Queue[Any] = ctx.Queue()
    moved = ctx.RawArray("q", len(STAGES))  # running bytes per stage, for the series
    admit = ctx.Semaphore(max(1, config.image_parallel))
    planner = writer.planner()
    # A filtered layer's blob depends on the filters too, and the cache does not key on them.
    cache = (LayerCache(config.layer_cache) if config.layer_cache and not config.filters.rewrites
             else None)
    bodies: dict[str, Callable[[StageIO], None]] = {
        "resolve": lambda io: resolve.run(io, list(sources), dest, config, admit, spool, planner,
                                          cache),
        "fetch": lambda io: fetch.run(io, config, spool),
        "verify": lambda io: verify.run(io, config),
        "compress": lambda io: compress.run(io, dest.needs_uncompressed, config.compression,
                                            config.compression_level, config.filters),
        "write": lambda io: write.run(io, writer, admit, cache, config.compression_level,
                                      config.filters),
    }
    procs: dict[str, mp.process.BaseProcess] = {}
    for i, name in enumerate(STAGES):
        inq = queues[i - 1] if i > 0 else None
        outq = queues[i] if i < len(queues) else None
        procs[name] = ctx.Process(target=_stage_main, name=f"occystrap-{name}",
                                  args=(name, bodies[name], inq, outq, control, moved),
                                  daemon=True)
    for p in procs.values():
        p.start()
    sampler = Sampler({name: p.pid for name, p in procs.items() if p.pid},
                      queues={f"{STAGES[i]}>{STAGES[i + 1]}": (q, QUEUE_SIZE)
                              for i, q in enumerate(queues)},
                      moved=moved, stages=STAGES)

    sampler.sample()  # every stage is seen at least once, however short the run
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    next_sample = time.monotonic() + SAMPLE_EVERY
    try:
        while True:
            # Sleep until a message or a stage's exit (not a fixed tick): the end of a run
            # is noticed at once, which is most of a small copy's fixed cost.
            _wait_for_news(control, procs.values(), timeout=SAMPLE_EVERY)
            _drain(control, result, on_event)
            if time.monotonic() >= next_sample:  # samples stay evenly spaced
                sampler.sample()
                next_sample = time.monotonic() + SAMPLE_EVERY
                if on_tick is not None:
                    on_tick(result)
            if config.fail_fast and result.failed and result.error is None:
                result.error = (f"stopped at the first failure (--fail-fast): "
                                f"{result.failed[0].source}")
            if result.error is not None:
                break
            exited = {n: p.exitcode for n, p in procs.items() if p.exitcode is not None}
            crashed = {n: c for n, c in exited.items() if c != 0}
            if crashed:
                _drain(control, result, on_event)
                if result.error is None:
                    name, code = next(iter(crashed.items()))
                    result.error = f"internal error: the {name} stage died (exit code {code})"
                break
            if len(exited) == len(procs):
                _drain(control, result, on_event)
                break
    except KeyboardInterrupt:
        result.interrupted = True
        result.error = "interrupted"
    except Terminated:
        result.interrupted = result.terminated = True
        result.error = "terminated"
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        failed_run = result.error is not None
        _stop(procs.values(), force=failed_run)
        sampler.sample()
        sampler.row()
        if failed_run:
            dest.remove_temp_files(config.temp_dir)
        shutil.rmtree(spool, ignore_errors=True)
        if failed_run and not result.done:
            # The write process owned the writer; ours is the fork's twin, which knows of no
            # published image, so it may only clean up when none was (an empty new directory
            # or layout, a temp tar).
            try:
                writer.close(False)
            except OccystrapError:
                pass
        if failed_run:
            dest.remove_journal()
        for q in [*queues, control]:
            q.cancel_join_thread()
            q.close()
    result.memory = sampler.peaks
    result.peak_pss_total = sampler.peak_total
    result.queues = {name: q.to_dict() for name, q in sampler.queue_stats.items()}
    result.series = sampler.series
    result.wall_seconds = time.monotonic() - started
    return result


def merge(results: Sequence[RunResult]) -> RunResult:
    """One result for several runs (a --from-file spec with several destinations)."""
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
        merged.reports, merged.memory = r.reports, r.memory
        merged.queues, merged.series = r.queues, r.series
        merged.image_seconds.update(r.image_seconds)
        merged.search_hits += r.search_hits
        merged.notices += r.notices
        merged.sources += r.sources
    return merged


def _wait_for_news(control: Queue[Any], procs: Any, timeout: float) -> None:
    """Block until the control queue has a message, a stage exits, or `timeout` passes."""
    reader = getattr(control, "_reader", None)  # CPython's Queue: the pipe it reads
    waitables = [p.sentinel for p in procs if p.exitcode is None]
    if reader is None:
        time.sleep(timeout)
        return
    mp_connection.wait([reader, *waitables], timeout)


def _drain(control: Queue[Any], result: RunResult,
           on_event: Callable[[ImageDone | ImageFailed | Notice], None] | None) -> None:
    while True:
        try:
            data = control.get(timeout=0.01)
        except Exception:  # queue.Empty; also EOF when a child died mid-put
            return
        msg = messages.decode(data)
        if isinstance(msg, SearchHits):
            result.search_hits.append(msg)
            continue
        if isinstance(msg, Notice):
            if msg.verbose:
                result.notices.append(msg)
            elif on_event is not None:
                on_event(msg)
            continue
        if isinstance(msg, Progress):
            result.progress[msg.image_id] = msg
            result.first_seen.setdefault(msg.image_id, time.monotonic())
            continue
        if isinstance(msg, ImageDone | ImageFailed):
            # from fetch's first word of the image (else the run's start) to its outcome
            began = result.first_seen.get(msg.image_id, result.started)
            result.image_seconds[msg.image_id] = time.monotonic() - began
        if isinstance(msg, ImageDone):
            result.done.append(msg)
        elif isinstance(msg, ImageFailed):
            result.failed.append(msg)
        elif isinstance(msg, StageReport):
            result.reports[msg.stage] = msg
            continue
        elif isinstance(msg, StageCrashed):
            if result.error is None:
                if msg.traceback:
                    result.error = (f"internal error in the {msg.stage} stage: {msg.error}\n"
                                    f"{msg.traceback}")
                else:
                    result.error = msg.error
            continue
        if on_event is not None:
            on_event(msg)  # type: ignore[arg-type]


def _stop(procs: Any, force: bool) -> None:
    procs = list(procs)
    if force:
        for p in procs:
            if p.exitcode is None:
                p.terminate()
    deadline = time.monotonic() + 3.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.exitcode is None:
            p.kill()
            p.join(1.0)
