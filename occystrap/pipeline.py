"""The process pipeline: resolve → fetch → verify → compress → write.

    resolve ─C─► fetch ─C─► verify ─C─► compress ─C─► write
       ▲                                                │
       └── admission semaphore (-J) ◄───────────────────┘   control channel ──► supervisor

Each stage is a forked process (modules imported before the fork share their pages, which
keeps the tree's memory near the floor). The main line is four bounded channels
(channel.py, QUEUE_SIZE messages each) of msgspec-encoded descriptors; closing a channel is
the end of its stream. The supervisor (this process) collects outcomes and reports, samples
memory and channels, and on Ctrl-C or a dead stage stops every child, removes temp files
and returns.

Side channels, every one of them (all made here before the fork):
- control channel (stages → supervisor, unbounded): ImageDone and ImageFailed from write
  (the end of the line hears of every failure), each stage's StageReport at its end,
  StageCrashed, Notice (a long wait; a source's note for -v), Progress from fetch, SearchHits
  from compress. The supervisor sleeps on its wait handle and the stages' sentinels.
- admission semaphore (-J): resolve takes a slot per top-level image, write gives it back
  when the image is published or failed.
- failed images (stages/failures.py, a ring of ids in shared memory): whoever fails an image
  posts it, and fetch, verify and compress stop work on it, so a failure in write cancels the
  downloads fetch has queued for that image.
- running byte counts (a shared array, a slot per stage, stages/accounting.py): the
  per-second series.
- channel statistics (shared counters in each channel): messages through it and the time its
  sender was blocked and its receiver waited; read by the stages' reports and the sampler.
- the rate limit's shared token bucket per host (registry/ratelimit.py), and what is looked
  up once and inherited (stages/prefork.py): the TLS context, the registry credentials.
- the destination itself: the tar planner's regions (planned by resolve, filled by fetch,
  finished by write) and the layer cache file.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.process import BaseProcess

import msgspec

from occystrap.channel import Receiver, Sender, open_channel
from occystrap.config import Config
from occystrap.destinations import Destination
from occystrap.errors import DestinationError, OccystrapError
from occystrap.layers.cache import LayerCache
from occystrap.messages import (
    STAGES,
    ImageDone,
    ImageFailed,
    Message,
    Notice,
    Progress,
    SearchHits,
    StageCrashed,
    StageReport,
)
from occystrap.outcome import RunResult
from occystrap.reference import Location
from occystrap.registry import ratelimit
from occystrap.stages.base import Stage, Wiring, crash
from occystrap.stages.child import setup_child
from occystrap.stages.compress import Compress
from occystrap.stages.failures import FailedImages
from occystrap.stages.fetch import Fetch
from occystrap.stages.prefork import warm_up
from occystrap.stages.resolve import Resolve
from occystrap.stages.verify import Verify
from occystrap.stages.write import Write
from occystrap.stats.sampler import Sampler

QUEUE_SIZE = 64
SAMPLE_EVERY = 0.05  # seconds between the supervisor's memory and channel samples

Event = ImageDone | ImageFailed | Notice


class Live(msgspec.Struct):
    """What the supervisor knows while the run goes on, for a live display (`on_tick`):
    the result so far, and fetch's latest Progress per image."""

    result: RunResult
    progress: dict[int, Progress] = msgspec.field(default_factory=dict)
    first_seen: dict[int, float] = msgspec.field(default_factory=dict)  # image id → monotonic time
    started: float = msgspec.field(default_factory=time.monotonic)

    @property
    def done(self) -> list[ImageDone]:
        return self.result.done

    @property
    def failed(self) -> list[ImageFailed]:
        return self.result.failed

    @property
    def sources(self) -> int:
        return self.result.sources

    @property
    def image_seconds(self) -> dict[int, float]:
        return self.result.image_seconds


def _stage_main(make: Callable[[Wiring], Stage], wiring: Wiring) -> None:
    """A stage process: made after the fork, it runs and exits (Stage.main)."""
    setup_child()
    try:
        stage = make(wiring)
    except BaseException as exc:  # noqa: BLE001 - reported like a crash in the stage
        crash(wiring.control, wiring.name, exc)
    stage.main()


class Terminated(BaseException):
    """SIGTERM reached the supervisor: stop like Ctrl-C, and say so with exit code 143."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def streams(dest: Destination, config: Config) -> bool:
    """Is a blob uploaded while it downloads? Into a registry, when nothing changes the
    bytes on the way (no --compression, no filters) and no layer waits for a full check
    (--verify-full decompresses the whole layer first)."""
    return (
        dest.location.scheme == "registry"
        and not config.compression
        and not config.filters
        and not config.verify_full
    )


def recodes(dest: Destination, config: Config) -> bool:
    """Does compress re-encode every layer and nothing else (--compression, no filters, a
    destination that keeps layers compressed)? Then fetch hands plain layers of a local
    source on where they lie (compress.read_in_source)."""
    return bool(config.compression) and not config.filters and not dest.needs_uncompressed


def keeps_fetched(dest: Destination, config: Config, spool: str) -> bool:
    """Does the destination keep each downloaded blob file as it is? An oci:// layout
    renames them into place, unless --compression or filters write new ones, or the spool
    is on another file system (--temp-dir), from which they are copied."""
    if dest.location.scheme != "oci" or config.compression or config.filters:
        return False
    try:
        return os.stat(spool).st_dev == os.stat(dest.path).st_dev
    except OSError:
        return False


def run(
    sources: Sequence[Location],
    dest_location: Location,
    config: Config,
    on_event: Callable[[Event], None] | None = None,
    on_tick: Callable[[Live], None] | None = None,
) -> RunResult:
    """Copy `sources` to one destination. `on_event` hears each image's outcome as it
    happens; `on_tick` is called every supervisor loop (~10 times a second) with what is
    known so far, for a live progress display."""
    ctx = mp.get_context("fork")
    ratelimit.install(config.rate_limit)  # shared memory, before the stages fork
    warm_up(sources, dest_location, config)  # what every stage inherits
    token = uuid.uuid4().hex[:12]
    dest = Destination(dest_location, token)
    spool = dest.spool_dir(config.temp_dir)
    result = RunResult(sources=len(sources))
    live = Live(result)

    writer = dest.open_writer(config, spool)  # fails early on an unwritable destination
    try:
        os.makedirs(spool, exist_ok=True)
    except OSError as exc:
        writer.close(False)
        raise DestinationError(f"cannot create spool directory {spool}: {exc.strerror}") from None

    links = [open_channel(ctx, QUEUE_SIZE) for _ in range(len(STAGES) - 1)]
    control_tx, control = open_channel(ctx, None, senders=len(STAGES))
    failures = FailedImages(ctx)
    moved = ctx.RawArray("q", len(STAGES))  # running bytes per stage, for the series
    admit = ctx.BoundedSemaphore(max(1, config.image_parallel))  # over-release: ValueError
    planner = writer.planner()
    # A filtered layer's blob depends on the filters too, and the cache does not key on them.
    cache = (
        LayerCache(config.layer_cache)
        if config.layer_cache and not config.filters.rewrites
        else None
    )
    makers: dict[str, Callable[[Wiring], Stage]] = {
        "resolve": lambda w: Resolve(w, sources, dest, config, admit, spool, planner, cache),
        "fetch": lambda w: Fetch(
            w,
            config,
            spool,
            stream=streams(dest, config),
            recodes=recodes(dest, config),
            keeps=keeps_fetched(dest, config, spool),
        ),
        "verify": lambda w: Verify(w, config),
        "compress": lambda w: Compress(
            w,
            dest.needs_uncompressed,
            config.compression,
            config.compression_level,
            config.filters,
            spool,
        ),
        "write": lambda w: Write(w, writer, admit, cache, config.compression_level, config.filters),
    }
    procs: dict[str, BaseProcess] = {}
    for i, name in enumerate(STAGES):
        wiring = Wiring(
            name,
            inbox=links[i - 1][1] if i > 0 else None,
            outbox=links[i][0] if i < len(links) else None,
            control=control_tx,
            failures=failures,
            moved=moved,
        )
        procs[name] = ctx.Process(
            target=_stage_main, name=f"occystrap-{name}", args=(makers[name], wiring), daemon=True
        )
    # Objects made so far go to the permanent generation: a collection in a stage then
    # never touches their headers, so their pages stay shared with the supervisor instead of
    # being copied into every stage on write (PSS, and page faults at the stages' start).
    gc.freeze()
    try:
        for p in procs.values():
            p.start()
    finally:
        gc.unfreeze()  # the supervisor's own garbage stays collectable
    sampler = Sampler(
        {name: p.pid for name, p in procs.items() if p.pid},
        channels={f"{STAGES[i]}>{STAGES[i + 1]}": rx for i, (_, rx) in enumerate(links)},
        moved=moved,
        stages=STAGES,
    )

    sampler.sample()  # every stage is seen at least once, however short the run
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    next_sample = time.monotonic() + SAMPLE_EVERY
    try:
        while True:
            # Sleep until a message or a stage's exit (not a fixed tick): the end of a run
            # is noticed at once, which is most of a small copy's fixed cost.
            _wait_for_news(control, procs.values(), timeout=SAMPLE_EVERY)
            _drain(control, live, on_event)
            if time.monotonic() >= next_sample:  # samples stay evenly spaced
                sampler.sample()
                next_sample = time.monotonic() + SAMPLE_EVERY
                if on_tick is not None:
                    on_tick(live)
            if config.fail_fast and result.failed and result.error is None:
                result.error = (
                    f"stopped at the first failure (--fail-fast): {result.failed[0].source}"
                )
            if result.error is not None:
                break
            exited = {n: p.exitcode for n, p in procs.items() if p.exitcode is not None}
            crashed = {n: c for n, c in exited.items() if c != 0}
            if crashed:
                _drain(control, live, on_event)
                if result.error is None:
                    name, code = next(iter(crashed.items()))
                    result.error = f"internal error: the {name} stage died (exit code {code})"
                break
            if len(exited) == len(procs):
                _drain(control, live, on_event)
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
        result.queues = sampler.queues()
        ends: list[Sender | Receiver] = [end for link in links for end in link]
        for end in [*ends, control_tx, control]:
            end.discard()
    result.memory = sampler.peaks
    result.peak_pss_total = sampler.peak_total
    result.series = sampler.series
    result.wall_seconds = time.monotonic() - live.started
    return result


def _wait_for_news(control: Receiver, procs: Iterable[BaseProcess], timeout: float) -> None:
    """Block until the control channel may have a message, a stage exits, or `timeout`
    passes."""
    handle = control.wait_handle()
    waitables = [p.sentinel for p in procs if p.exitcode is None]
    if handle is None:
        time.sleep(timeout)
        return
    mp_connection.wait([handle, *waitables], timeout)


def _drain(control: Receiver, live: Live, on_event: Callable[[Event], None] | None) -> None:
    result = live.result
    while True:
        # Non-blocking: _wait_for_news already slept until there was news; waiting here
        # would add its timeout to every turn, the last one (the end of the run) included.
        msg: Message | None = control.poll(timeout=0)
        if msg is None:
            return
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
            live.progress[msg.image_id] = msg
            live.first_seen.setdefault(msg.image_id, time.monotonic())
            continue
        if isinstance(msg, StageReport):
            result.reports[msg.stage] = msg
            continue
        if isinstance(msg, StageCrashed):
            if result.error is None:
                if msg.traceback:
                    result.error = (
                        f"internal error in the {msg.stage} stage: {msg.error}\n{msg.traceback}"
                    )
                else:
                    result.error = msg.error
            continue
        if isinstance(msg, ImageDone | ImageFailed):
            # from fetch's first word of the image (else the run's start) to its outcome
            began = live.first_seen.get(msg.image_id, live.started)
            result.image_seconds[msg.image_id] = time.monotonic() - began
            if isinstance(msg, ImageDone):
                result.done.append(msg)
            else:
                result.failed.append(msg)
            if on_event is not None:
                on_event(msg)


def _stop(procs: Iterable[BaseProcess], force: bool) -> None:
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
